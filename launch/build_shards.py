"""Build captioned webdataset shards from RS datasets (B2C/M2B captions, p-Hash dedup). See --help.

    python launch/build_shards.py --input dota:/data/DOTA/train --input captions:/data/RSICD --output /data/shards/rs
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a plain checkout too

from shards.cli import parse_build_command, run_build_command  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    return run_build_command(parse_build_command(argv))


if __name__ == "__main__":
    sys.exit(main())
