"""DOTA_devkit's ImgSplit: a DOTA folder cut into overlapping tiles, written as a DOTA folder (shards.split_dota).

    python launch/split_dota.py --input DOTA_DIR --output OUT_DIR --tile.size 1024 --tile.overlap 200 \
        [--tile.min-visible 0.7] [--keep-empty]

Writes OUT_DIR/images/<stem>__1__<x0>___<y0>.png and OUT_DIR/labelTxt/<stem>__1__<x0>___<y0>.txt (tile pixels,
the clipped oriented boxes of shards.tiling) and OUT_DIR/split_dota.json; prints the summary as one JSON line.
Tiles with no object are counted, and written only with --keep-empty. --config YAML gives any option as a key.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a plain checkout too

from rs_common.config import run_config_tool  # noqa: E402
from rs_common.errors import LayoutError  # noqa: E402
from shards.split_dota import SplitDotaConfig, SplitError, split_dota  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    return run_config_tool(SplitDotaConfig, split_dota, argv, __doc__, (SplitError, LayoutError, OSError),
                           show=lambda s: {k: s[k] for k in ("output", "scenes", "tiles", "objects")})


if __name__ == "__main__":
    sys.exit(main())
