"""Peak memory of tiling one large scene: windowed TIFF reading against a decode-once PNG.

    python bench/bench_tiling.py [--sides 2048 8192 16384] [--tile 1024] [--overlap 200] [--json out.json]

For each side, one synthetic RGB scene (``synthetic.large_scene.background``: flat 64 px blocks) is written twice: a
tiled TIFF (256 x 256 tiles, deflate, as GDAL writes COGs) and a PNG. A fresh subprocess per file does what a build
worker does with a tiled scene (``shards.scene_reader.open_scene``, then for every tile of
``shards.tiling.tile_grid``: read the window, encode it as JPEG, drop it) and reports its peak RSS
(``VmHWM``) and its RSS after the imports; the table gives the peak above that baseline and its ratio to the
decoded scene (width x height x 3 bytes). A TIFF should stay near one tile whatever the scene size; a PNG costs one
decoded scene (plus the PNG's bytes, read once).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def status_mb(field: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process from /proc, in MiB. Not ``ru_maxrss``: Linux carries it
    over an exec from the parent (a vfork-spawned child reports the parent's peak), VmHWM belongs to this image."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def child(path: str, tile: int, overlap: int) -> None:
    """Tile one scene the way a build worker does; print one JSON line of memory figures."""
    import io

    from shards.build_config import BuildConfig
    from shards.scene_reader import open_scene
    from shards.tiling import tile_grid

    cfg = BuildConfig()
    baseline = status_mb("VmRSS")
    start = time.perf_counter()
    scene = open_scene(Path(path), cfg.image)
    width, height = scene.size
    n = 0
    for box in tile_grid(width, height, tile, overlap):
        rgb, _ = scene.read(box)
        rgb.save(io.BytesIO(), format="JPEG", quality=95)
        n += 1
    scene.close()
    peak = status_mb("VmHWM")
    print(json.dumps({"windowed": scene.windowed, "tiles": n, "baseline_mb": round(baseline, 1), "peak_mb": round(peak, 1),
                      "seconds": round(time.perf_counter() - start, 2)}))


def write_scene(folder: Path, side: int) -> dict[str, Path]:
    import cv2
    import numpy as np
    import tifffile

    from synthetic.large_scene import background

    image = background(side, np.random.default_rng(0))
    tif, png = folder / f"scene_{side}.tif", folder / f"scene_{side}.png"
    tifffile.imwrite(tif, image, tile=(256, 256), photometric="rgb", compression="zlib", compressionargs={"level": 1})
    cv2.imwrite(str(png), image[:, :, ::-1], [cv2.IMWRITE_PNG_COMPRESSION, 1])
    return {"tiled TIFF": tif, "PNG": png}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sides", type=int, nargs="+", default=[2048, 8192, 16384])
    parser.add_argument("--tile", type=int, default=1024)
    parser.add_argument("--overlap", type=int, default=200)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.tile, args.overlap)
        return
    rows = []
    print(f"tile {args.tile}, overlap {args.overlap}; python {platform.python_version()}; peak RSS above the post-import baseline")
    print(f"{'scene':>13} {'format':>10} {'tiles':>6} {'decoded scene MB':>17} {'peak MB':>8} {'peak / scene':>13} {'s':>6}")
    with tempfile.TemporaryDirectory() as tmp:
        for side in args.sides:
            for fmt, path in write_scene(Path(tmp), side).items():
                out = subprocess.run([sys.executable, __file__, "--child", str(path), "--tile", str(args.tile),
                                      "--overlap", str(args.overlap)], capture_output=True, text=True, check=True)
                r = json.loads(out.stdout.strip().splitlines()[-1])
                scene_mb = side * side * 3 / 2**20
                above = r["peak_mb"] - r["baseline_mb"]
                rows.append({"side": side, "format": fmt, "file_mb": round(path.stat().st_size / 2**20, 1), "scene_mb": round(scene_mb, 1),
                             "peak_above_baseline_mb": round(above, 1), "ratio": round(above / scene_mb, 3), **r})
                print(f"{side:>6} x {side:<6} {fmt:>10} {r['tiles']:>6} {scene_mb:>17.0f} {above:>8.0f} {above / scene_mb:>13.2f} {r['seconds']:>6.1f}")
                path.unlink()
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
