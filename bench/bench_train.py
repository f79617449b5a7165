"""Training step time vs open_clip_train, and data-loader throughput vs the model's step rate, in one run.

    python bench/bench_train.py [--shards DIR] [--model rs-tiny] [--batch-size 32] [--steps 60] [--workers 2]
                                [--precision fp32] [--device cpu]

Both loops run as subprocesses on the same shards, model, batch size, precision, worker count, lr schedule
and seed, with ``--local-loss --gather-with-grad`` (no effect in one process). Per-step times come from each
loop's own log (ours: log.jsonl ``step_time_s``; open_clip_train: ``Batch (t)`` with --log-every-n-steps 1,
which it resets every log line); the first ``--skip`` steps (start-up, worker spawn) are left out and the
median is compared. Goal: ours / open_clip_train <= 1.0 (never above 1.1). The loss of both loops over the
same steps is printed side by side (same seed, but the two loops order and augment samples differently, so
equal means "within noise", not bit-equal).

Loader: our loader alone (decode, augment, tokenize; no model) for the same batches -> samples/s, compared
with the training loop's samples/s. Goal: >= 3x.

Without --shards, demo shards are built first (runs/demo via launch/demo.py's data generator).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

OPENCLIP_RUNNER = "import sys, clip_pretrain; from open_clip_train.main import main; main(sys.argv[1:])"


def run_ours(shards: Path, out: Path, a: argparse.Namespace) -> list[dict]:
    cmd = [sys.executable, str(ROOT / "launch/pretrain_clip.py"), "--train-data", str(shards), "--model", a.model,
           "--batch-size", str(a.batch_size), "--max-steps", str(a.steps), "--workers", str(a.workers),
           "--precision", a.precision, "--lr", "5e-4", "--warmup", "10", "--wd", "0.2", "--seed", "0",
           "--output", str(out), "--log-every-steps", "1", "--save-every-steps", str(10 * a.steps), "--device", a.device]
    subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT)
    return [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]


def run_open_clip_train(shards: Path, out: Path, a: argparse.Namespace, n_samples: int) -> list[dict]:
    urls = sorted(shards.glob("shard-*.tar"))
    pattern = str(shards / f"shard-{{000000..{len(urls) - 1:06d}}}.tar")
    # one epoch of exactly --steps steps: open_clip_train sizes its epoch from --train-num-samples
    cmd = [sys.executable, "-c", OPENCLIP_RUNNER, "--train-data", pattern, "--dataset-type", "webdataset",
           "--train-num-samples", str(a.steps * a.batch_size), "--model", a.model, "--batch-size", str(a.batch_size),
           "--epochs", "1", "--workers", str(a.workers), "--precision", a.precision, "--lr", "5e-4", "--warmup", "10",
           "--wd", "0.2", "--seed", "0", "--logs", str(out), "--name", "oc", "--log-every-n-steps", "1",
           "--save-frequency", "0", "--zeroshot-frequency", "0", "--val-frequency", "0", "--report-to", "",
           "--local-loss", "--gather-with-grad", "--device", a.device]
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    text = run.stdout + run.stderr
    if run.returncode != 0:
        raise RuntimeError(f"open_clip_train failed:\n{text[-3000:]}")
    rows = []
    for m in re.finditer(r"\[\s*(\d+)/\d+ .*?Data \(t\): ([0-9.]+) Batch \(t\): ([0-9.]+).*?Contrastive_loss: ([0-9.]+)", text):
        rows.append({"samples": int(m.group(1)), "data_time_s": float(m.group(2)), "step_time_s": float(m.group(3)),
                     "loss": float(m.group(4))})
    for i, r in enumerate(rows):
        r["step"] = i + 1
    return rows


def loader_rate(shards: Path, a: argparse.Namespace, n_batches: int) -> float:
    """Samples/s of our loader alone (same transform, tokenizer, workers), timed after the first batch."""
    import open_clip

    import clip_pretrain  # noqa: F401
    from clip_pretrain.config import AugConfig
    from clip_pretrain.data import RSTrainTransform, ShardStream, expand_urls, make_loader, shard_sizes

    model = open_clip.create_model(a.model)
    pp = open_clip.get_model_preprocess_cfg(model)
    size = pp["size"] if isinstance(pp["size"], int) else pp["size"][0]
    urls = expand_urls(str(shards))
    ds = ShardStream(urls, shard_sizes(urls), rank=0, world=1, batch_size=a.batch_size, seed=0,
                     transform=RSTrainTransform(size, pp["mean"], pp["std"], AugConfig()),
                     tokenizer=open_clip.get_tokenizer(a.model), shuffle_buffer=2000)
    done, start = 0, None
    while done < n_batches:
        for _ in make_loader(ds, a.workers):
            if start is None:
                start = time.perf_counter()
            else:
                done += 1
            if done >= n_batches:
                break
        ds.epoch += 1
    return done * a.batch_size / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shards", type=Path, default=None)
    p.add_argument("--model", default="rs-tiny")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--skip", type=int, default=10, help="first steps left out of the medians")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--precision", default="fp32")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args(argv)
    shards = a.shards
    if shards is None:
        shards = ROOT / "runs/demo/shards"
        if not (shards / "sizes.json").exists():
            subprocess.run([sys.executable, str(ROOT / "launch/demo.py"), "--stage", "shards"], check=True, cwd=ROOT)
    n_samples = sum(json.loads((shards / "sizes.json").read_text()).values())
    with tempfile.TemporaryDirectory() as tmp:
        ours = run_ours(shards, Path(tmp) / "ours", a)
        theirs = run_open_clip_train(shards, Path(tmp) / "oc", a, n_samples)
    t_ours = statistics.median(r["step_time_s"] for r in ours[a.skip:])
    t_theirs = statistics.median(r["step_time_s"] for r in theirs[a.skip:])
    model_sps = a.batch_size / t_ours
    loader_sps = loader_rate(shards, a, n_batches=max(20, a.steps // 2))
    result = {
        "model": a.model, "batch_size": a.batch_size, "precision": a.precision, "device": a.device, "workers": a.workers,
        "steps": a.steps, "skip": a.skip, "samples": n_samples,
        "ours_step_s": t_ours, "open_clip_train_step_s": t_theirs, "ratio": t_ours / t_theirs,
        "loss_ours": [r["loss"] for r in ours], "loss_open_clip_train": [r["loss"] for r in theirs],
        "model_samples_per_s": model_sps, "loader_samples_per_s": loader_sps, "loader_ratio": loader_sps / model_sps,
    }
    print(f"training step, {a.model} bs {a.batch_size} {a.precision} on {a.device}, {a.workers} workers, "
          f"median of steps {a.skip + 1}..{a.steps}:")
    print(f"  ours            {t_ours * 1000:8.1f} ms/step")
    data_theirs = statistics.median(r["data_time_s"] for r in theirs[a.skip:])
    result["open_clip_train_data_wait_s"] = data_theirs
    print(f"  open_clip_train {t_theirs * 1000:8.1f} ms/step (of which waiting for data {data_theirs * 1000:.1f} ms)")
    print(f"  ratio ours/open_clip_train = {result['ratio']:.3f}  (goal <= 1.0, never > 1.1)")
    every = max(1, a.steps // 6)
    print("  loss (ours | open_clip_train) at steps " + ", ".join(
        f"{i + 1}: {ours[i]['loss']:.3f} | {theirs[i]['loss']:.3f}" for i in range(0, min(len(ours), len(theirs)), every)))
    print(f"loader alone {loader_sps:.0f} samples/s vs model {model_sps:.0f} samples/s: {result['loader_ratio']:.1f}x (goal >= 3x)")
    if a.json:
        a.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
