"""Image-text retrieval recall@k (RemoteCLIP's metric) of a CLIP checkpoint on a caption set or stage-0 shards.

    python launch/eval_retrieval.py --model ViT-B-32 --checkpoint runs/x/final.safetensors \
        --captions data/rsitmd/dataset_RSITMD.json --images data/rsitmd/images --split test --output runs/x/eval_rsitmd
    python launch/eval_retrieval.py --model rs-tiny --checkpoint none --shards 'out/shard-{000000..000003}.tar'

Writes OUTPUT/metrics.json (i2t_R@1/5/10, t2i_R@1/5/10, mean_recall, counts) and report.html;
--save-embeddings adds image_emb.npy, text_emb.npy, text_to_image.json. --config YAML gives any of the
options as keys (flags win). See clip_pretrain/evaluate/retrieval.py for the metric and tie rules.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a plain checkout too

from clip_pretrain.evaluate.retrieval import EvalError, RetrievalEvalConfig, evaluate_retrieval  # noqa: E402
from clip_pretrain.models import CheckpointError  # noqa: E402
from shards.config import ConfigError, load_config  # noqa: E402
from shards.record import AnnotationError  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                argument_default=argparse.SUPPRESS)
    p.add_argument("--config", default=None, help="YAML file with any of the options below as keys (flags win)")
    p.add_argument("--model", help="open_clip model name (rs-tiny, ViT-B-32, ViT-L-14, ...)")
    p.add_argument("--checkpoint", help="weights file create_clip reads (.pt/.bin/.safetensors/OpenAI .pt); "
                   "omit or 'none' for random init (chance baseline)")
    p.add_argument("--captions", help="Karpathy caption json, or a folder holding dataset*.json")
    p.add_argument("--images", help="image folder of the caption json (default: images/ beside the json)")
    p.add_argument("--split", help="caption-json split: test (default), val, a comma list, or all")
    p.add_argument("--shards", help="stage-0 shards instead of --captions: a folder, a tar glob or a brace pattern")
    p.add_argument("--output", help="output folder (default: eval_retrieval)")
    p.add_argument("--save-embeddings", dest="save_embeddings", action="store_true",
                   help="also write image_emb.npy, text_emb.npy, text_to_image.json")
    p.add_argument("--batch-size", dest="batch_size", type=int, help="images/texts per forward pass (default 64)")
    p.add_argument("--search-batch-size", dest="search_batch_size", type=int, help="queries per faiss search (default 16384)")
    p.add_argument("--device", help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument("--workers", type=int, help="image decoding processes (default 4; 0 = main process)")
    p.add_argument("--ks", type=int, nargs="+", help="recall cut-offs (default 1 5 10)")
    p.add_argument("--report-queries", dest="report_queries", type=int, help="queries per direction in report.html (0 = none)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = vars(build_parser().parse_args(argv))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_config(RetrievalEvalConfig, args.pop("config", None), args)
        metrics = evaluate_retrieval(cfg)
    except (EvalError, ConfigError, CheckpointError, AnnotationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({k: v for k, v in metrics.items() if "R@" in k or k in ("mean_recall", "n_images", "n_texts")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
