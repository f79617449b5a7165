"""The main job on its embedded default: synthetic RS scenes -> shards -> tiny CLIP training -> evaluation.

    ./run demo                  # or: python launch/demo.py [--out runs/demo] [--steps 300]

No data or weights are needed. Stage 0 generates demo data in the real formats (DOTA labelTxt, COCO json,
LoveDA-style masks, Karpathy caption json, scene folders), reads it with the same readers as real data and
writes de-duplicated shards + report; the caption set's test split is held out (and guarded by
--dedup-against). Stage 1 trains the tiny ``rs-tiny`` CLIP on CPU, then evaluates text<->image retrieval on
that held-out split and zero-shot classification on the scene folders, beside a random-init baseline.
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shards.cli import main as build_shards  # noqa: E402
from shards.synthetic import generate_demo  # noqa: E402


def stage_shards(out: Path, workers: int, seed: int) -> int:
    data = out / "data"
    if not (data / "planted.json").exists():
        print(f"[demo] generating synthetic RS scenes into {data}")
        generate_demo(data, seed=seed)
    shards = out / "shards"
    print(f"[demo] stage 0: building shards into {shards}")
    return build_shards([
        "--input", f"dota:{data / 'dota'}",
        "--input", f"coco:{data / 'coco'}",
        "--input", f"mask:{data / 'masks'}",
        "--input", f"captions:{data / 'captions'}",
        "--input", f"folders:{data / 'scenes'}",
        "--dedup-against", str(data / "captions" / "dataset.json"),
        "--output", str(shards),
        "--workers", str(workers),
        "--shard-size", "100",
        "--overwrite",
    ])


def stage_train(out: Path, workers: int, steps: int, seed: int) -> dict:
    import clip_pretrain  # noqa: F401 - registers rs-tiny
    from clip_pretrain.config import TrainConfig
    from clip_pretrain.evaluate.retrieval import RetrievalEvalConfig, evaluate_retrieval
    from clip_pretrain.evaluate.zeroshot import ZeroShotConfig, evaluate_zeroshot
    from clip_pretrain.train import train
    from shards.config import load_config

    data, run = out / "data", out / "clip"
    cfg = load_config(TrainConfig, overrides={
        "train_data": str(out / "shards"), "model": "rs-tiny", "batch_size": 32, "lr": 1e-3, "wd": 0.1,
        "warmup": max(1, steps // 10), "max_steps": steps, "workers": workers, "seed": seed, "output": str(run),
        "save_every_steps": max(1, steps // 3), "log_every_steps": 5, "device": "cpu",
        "eval.captions": str(data / "captions" / "dataset.json"), "eval.split": "test",
    })
    print(f"[demo] stage 1: training rs-tiny for {steps} steps on CPU into {run}")
    summary = train(cfg)
    print("[demo] baseline: the same evaluation with random-init weights")
    baseline = evaluate_retrieval(RetrievalEvalConfig(
        model="rs-tiny", checkpoint=None, captions=str(data / "captions" / "dataset.json"), split="test",
        output=str(run / "eval_random_init"), device="cpu", workers=0, report_queries=0))
    zeroshot = {}
    for name, ckpt in (("trained", summary.get("final")), ("random_init", None)):
        zeroshot[name] = evaluate_zeroshot(ZeroShotConfig(
            model="rs-tiny", checkpoint=ckpt, data=str(data / "scenes"), output=str(run / f"zeroshot_{name}"),
            device="cpu", workers=0))
    keys = ("i2t_R@1", "i2t_R@5", "t2i_R@1", "t2i_R@5", "mean_recall")
    result = {
        "steps": summary["step"], "train_seconds": summary["seconds"], "samples_per_s": summary["samples_per_s"],
        "retrieval_heldout": {k: summary["eval"][k] for k in keys} | {"n_images": summary["eval"]["n_images"]},
        "retrieval_random_init": {k: baseline[k] for k in keys},
        "zeroshot_top1": {k: v["top1"] for k, v in zeroshot.items()},
    }
    (run / "demo_result.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/demo"), help="where demo data and outputs go")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (shard build and data loader)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic scenes and of training")
    parser.add_argument("--steps", type=int, default=300, help="training steps of the tiny model")
    parser.add_argument("--stage", choices=("all", "shards", "train"), default="all",
                        help="shards: stage 0 only; train: stage 1 on existing demo shards")
    args = parser.parse_args(argv)
    if args.stage in ("all", "shards"):
        rc = stage_shards(args.out, args.workers, args.seed)
        if rc or args.stage == "shards":
            print(f"[demo] shard report: {args.out / 'shards' / 'report.html'}")
            return rc
    result = stage_train(args.out, args.workers, args.steps, args.seed)
    run = args.out / "clip"
    print(json.dumps(result, indent=2))
    print(f"[demo] shard report:      {args.out / 'shards' / 'report.html'}")
    print(f"[demo] loss curve:        {run / 'loss_curve.png'}")
    print(f"[demo] retrieval report:  {run / 'eval' / 'report.html'}")
    print(f"[demo] zero-shot:         {run / 'zeroshot_trained' / 'confusion_matrix.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
