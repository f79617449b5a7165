r"""Evaluate GeoChat on LLaVA-format data (scene classification, VQA, referring, grounding, region captioning).

    python launch/eval_geochat.py --model runs/geochat_hf --task vqa --data rsvqa_lr_test.json --images imgs \
        --output runs/eval/vqa [--adapter runs/lora] [--max-new-tokens 128] [--device cuda]
    python launch/eval_geochat.py --task refer --data refer_test.json --images imgs --predictions answers.jsonl

Scores: classify/vqa accuracy (%), refer/grounding acc@0.5 (%, rotated IoU; angle convention in
vlm_finetune/boxes.py), region-caption ROUGE-1/ROUGE-L (+ METEOR when nltk and its WordNet data are installed).
Writes predictions.jsonl (when a model runs), metrics.json (main figure under "score") and report.html to
--output; the last line printed is the metrics as one JSON object. --config YAML gives any option as a key.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a plain checkout too

from rs_common.config import run_config_tool
from vlm_finetune.evaluate import EvalError, EvalGeoChatConfig, evaluate_geochat
from vlm_finetune.geochat import GeoChatError


def main(argv: list[str] | None = None) -> int:
    return run_config_tool(EvalGeoChatConfig, evaluate_geochat, argv, __doc__, (EvalError, GeoChatError, OSError),
                           show=lambda metrics: metrics)


if __name__ == "__main__":
    sys.exit(main())
