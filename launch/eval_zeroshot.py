"""Zero-shot scene classification of a CLIP checkpoint on <class>/<image> folders (AID, RESISC45, ...).

    python launch/eval_zeroshot.py --model ViT-B-32 --checkpoint runs/x/final.safetensors --data data/AID \
        --output runs/x/eval_aid [--templates "a satellite photo of {}." "an aerial image of {}."]

Prompts: RemoteCLIP's "a satellite photo of {}." by default, with the folder name normalised
(BareLand -> "bare land"); several --templates are ensembled. Writes OUTPUT/metrics.json (top1, top5,
per_class, counts), confusion_matrix.png/.csv and predictions.csv. --config YAML gives any option as a key.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a plain checkout too

from clip_pretrain.evaluate.retrieval import EvalError  # noqa: E402
from clip_pretrain.evaluate.zeroshot import ZeroShotConfig, evaluate_zeroshot  # noqa: E402
from clip_pretrain.models import CheckpointError  # noqa: E402
from shards.config import ConfigError, load_config  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                argument_default=argparse.SUPPRESS)
    p.add_argument("--config", default=None, help="YAML file with any of the options below as keys (flags win)")
    p.add_argument("--model", help="open_clip model name (rs-tiny, ViT-B-32, ViT-L-14, ...)")
    p.add_argument("--checkpoint", help="weights file create_clip reads; omit or 'none' for random init")
    p.add_argument("--data", help="class-folder root: DATA/<class>/<image>")
    p.add_argument("--output", help="output folder (default: eval_zeroshot)")
    p.add_argument("--templates", nargs="+", help="prompt templates with {} for the class name "
                   "(default: 'a satellite photo of {}.'); several are ensembled")
    p.add_argument("--class-names", dest="class_names",
                   help='JSON object of folder name -> prompt class name overrides, e.g. \'{"Park": "city park"}\'')
    p.add_argument("--batch-size", dest="batch_size", type=int, help="images per forward pass (default 64)")
    p.add_argument("--device", help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument("--workers", type=int, help="image decoding processes (default 4; 0 = main process)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = vars(build_parser().parse_args(argv))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_config(ZeroShotConfig, args.pop("config", None), args)
        metrics = evaluate_zeroshot(cfg)
    except (EvalError, ConfigError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({k: metrics[k] for k in ("top1", "top5", "mean_per_class", "n_images", "n_classes", "n_skipped_images")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
