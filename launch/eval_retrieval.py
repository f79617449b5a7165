"""Image-text retrieval recall@k (RemoteCLIP's metric) of a CLIP checkpoint on a caption set or stage-0 shards.

    python launch/eval_retrieval.py --model ViT-B-32 --checkpoint runs/x/final.safetensors \\
        --captions data/rsitmd/dataset_RSITMD.json --images data/rsitmd/images --split test --output runs/x/eval_rsitmd
    python launch/eval_retrieval.py --model rs-tiny --checkpoint none --shards 'out/shard-{000000..000003}.tar'

Writes OUTPUT/metrics.json (i2t_R@1/5/10, t2i_R@1/5/10, mean_recall, counts) and report.html;
--save-embeddings adds image_emb.npy, text_emb.npy, text_to_image.json. --config YAML gives any of the
options as keys (flags win). See clip_pretrain/evaluate/recall.py for the metric and tie rules.
OpenAI's TorchScript .pt checkpoints need --allow-torchscript (loading one runs code stored in the file).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a plain checkout too

from clip_pretrain.evaluate.common import EvalError  # noqa: E402
from clip_pretrain.evaluate.retrieval import RetrievalEvalConfig, evaluate_retrieval  # noqa: E402
from clip_pretrain.models import CheckpointError  # noqa: E402
from rs_common.config import run_config_tool  # noqa: E402
from rs_common.errors import AnnotationError  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    errors = (EvalError, CheckpointError, AnnotationError, OSError)
    return run_config_tool(RetrievalEvalConfig, evaluate_retrieval, argv, __doc__, errors,
                           show=lambda m: {k: v for k, v in m.items() if "R@" in k or k in ("mean_recall", "n_images", "n_texts")})


if __name__ == "__main__":
    sys.exit(main())
