r"""Evaluate GeoChat: GeoChat-Bench as released, or one task on LLaVA-format data.

GeoChat-Bench (the files of MBZUAI/GeoChat-Bench: aid, UCmerced, lrben, hrben, referring, grounding_description,
region_captioning .jsonl), scored with GeoChat's metrics beside its published numbers:

    python launch/eval_geochat.py --bench DIR --model MODEL_DIR --images IMAGES [--output DIR]
    python launch/eval_geochat.py --bench DIR --answers ANSWERS_DIR [--output DIR]   # saved answers, no model
    python launch/eval_geochat.py --bench DIR --help                                  # every bench option

writes answers/<stem>.jsonl (GeoChat's answers-file format), metrics.json (stem -> metrics, percent), table.md,
report.html and run.json (rules: vlm_finetune/bench.py, bench_metrics.py).

One task on LLaVA-format data (the options below):

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
from vlm_finetune.bench import BenchError, pick_eval_tool
from vlm_finetune.evaluate import EvalError
from vlm_finetune.geochat import GeoChatError


def main(argv: list[str] | None = None) -> int:
    config, run = pick_eval_tool(sys.argv[1:] if argv is None else argv)
    return run_config_tool(config, run, argv, __doc__, (BenchError, EvalError, GeoChatError, OSError),
                           show=lambda metrics: metrics)


if __name__ == "__main__":
    sys.exit(main())
