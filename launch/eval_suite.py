"""RemoteCLIP's evaluation suite: zero-shot, linear probe, k-NN, few-shot, retrieval and counting over many datasets,
one checkpoint, one table.

    python launch/eval_suite.py --checkpoint runs/x/final.safetensors --suite remoteclip --data-root ~/data \\
        --output runs/x/suite --cache ~/.cache/rs-suite
    python launch/eval_suite.py --checkpoint RemoteCLIP-ViT-B-32.pt --model ViT-B-32 --suite my_suite.yaml

--suite: a YAML list of datasets ({name, tasks: [zeroshot, linear_probe, knn, few_shot, retrieval, counting], path},
optional train/test roots, images, split, class_names), or a shipped suite's name (remoteclip: RemoteCLIP's 12
zero-shot and 3 retrieval sets). Datasets not found are skipped with a line saying so. Writes OUTPUT/suite.json
(task -> dataset -> metrics), suite.md, suite.html (the paper's numbers beside ours), suite_meta.json and
splits/<dataset>.json. --cache keeps image features per checkpoint and image for later runs. --config YAML gives any
option as a key (flags win). OpenAI's TorchScript .pt checkpoints need --allow-torchscript.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a plain checkout too

from clip_pretrain.evaluate.common import EvalError  # noqa: E402
from clip_pretrain.evaluate.suite import SuiteConfig, run_suite, suite_headline  # noqa: E402
from clip_pretrain.models import CheckpointError  # noqa: E402
from rs_common.config import run_config_tool  # noqa: E402
from rs_common.errors import AnnotationError  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    return run_config_tool(SuiteConfig, run_suite, argv, __doc__, (EvalError, CheckpointError, AnnotationError, OSError),
                           show=suite_headline)


if __name__ == "__main__":
    sys.exit(main())
