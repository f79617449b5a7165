"""Shard build rate vs a plain loop that only decodes and re-encodes the same images.

    python bench/bench_build.py [--images 200] [--size 768] [--json out.json]

Both sides see the same synthetic DOTA-format PNG scenes (boxes in labelTxt). The baseline is the least
any shard writer must do: decode each image and encode it as JPEG at the same quality. The build does
that plus reading annotations, box checks, B2C captions, p-Hash, staging, dedup, shard writing and the
report. Ratio = build images/s / baseline images/s, measured in the same run. Goal: >= 0.8 with 1 worker.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from PIL import Image  # noqa: E402

from shards.cli import main as build_shards  # noqa: E402
from shards.synthetic import generate_demo  # noqa: E402


def baseline(paths: list[Path], quality: int) -> float:
    """Decode + JPEG re-encode only; returns seconds."""
    start = time.perf_counter()
    for path in paths:
        with Image.open(path) as img:
            rgb = img.convert("RGB")
        buf = io.BytesIO()
        rgb.save(buf, format="JPEG", quality=quality)
    return time.perf_counter() - start


def build(root: Path, out: Path, workers: int) -> float:
    if out.exists():
        shutil.rmtree(out)
    start = time.perf_counter()
    rc = build_shards(["--input", f"dota:{root}", "--output", str(out), "--workers", str(workers), "--no-progress", "--shard-size", "100"])
    seconds = time.perf_counter() - start
    if rc != 0:
        raise SystemExit(f"build failed with exit code {rc}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--size", type=int, default=768)
    parser.add_argument("--repeats", type=int, default=2, help="best of N for each measurement")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        generate_demo(tmp / "data", seed=1, n_dota=args.images, n_coco=1, n_masks=1, n_captions=3, n_scenes_per_class=1, size=args.size)
        root = tmp / "data" / "dota"
        paths = sorted((root / "images").iterdir())
        n = len(paths)
        base = min(baseline(paths, 95) for _ in range(args.repeats))
        results = {"images": n, "size": args.size, "baseline_img_per_s": n / base}
        for workers in (0, 1, 2):
            secs = min(build(root, tmp / f"out{workers}", workers) for _ in range(args.repeats))
            results[f"build_workers{workers}_img_per_s"] = n / secs
            results[f"ratio_workers{workers}"] = base / secs
    print(f"{n} PNG images {args.size}x{args.size}, JPEG q95, best of {args.repeats}")
    print(f"  baseline decode+encode loop : {results['baseline_img_per_s']:8.1f} img/s")
    for workers in (0, 1, 2):
        print(f"  build, --workers {workers}           : {results[f'build_workers{workers}_img_per_s']:8.1f} img/s   ratio {results[f'ratio_workers{workers}']:.2f}")
    print("  (workers 0 = everything in one process; workers N = N decode/hash/encode processes + the writer process)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
