"""The main job on its embedded default: synthetic RS scenes -> captioned, de-duplicated shards + report.

    ./run demo                  # or: python launch/demo.py [--out runs/demo] [--workers 2]

No data or weights are needed: the demo data is generated in the real formats (DOTA labelTxt, COCO json,
LoveDA-style masks, Karpathy caption json, scene folders) and read by the same readers as real data.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shards.cli import main as build_shards  # noqa: E402
from shards.synthetic import generate_demo  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/demo"), help="where demo data and outputs go")
    parser.add_argument("--workers", type=int, default=2, help="shard-build worker processes")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic scenes")
    args = parser.parse_args(argv)
    data = args.out / "data"
    if not (data / "planted.json").exists():
        print(f"[demo] generating synthetic RS scenes into {data}")
        generate_demo(data, seed=args.seed)
    shards = args.out / "shards"
    print(f"[demo] building shards into {shards}")
    return build_shards([
        "--input", f"dota:{data / 'dota'}",
        "--input", f"coco:{data / 'coco'}",
        "--input", f"mask:{data / 'masks'}",
        "--input", f"captions:{data / 'captions'}",
        "--input", f"folders:{data / 'scenes'}",
        "--dedup-against", str(data / "captions" / "dataset.json"),
        "--output", str(shards),
        "--workers", str(args.workers),
        "--shard-size", "100",
        "--overwrite",
    ])


if __name__ == "__main__":
    sys.exit(main())
