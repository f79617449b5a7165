"""GPU training throughput and peak memory: ViT-B-32 bs 256 and ViT-L-14 bs 28 (RemoteCLIP's batch sizes),
amp_bf16, with and without gradient checkpointing, on 1 GPU and (with --ranks 2) 2 ranks under torchrun.

    python bench/bench_gpu_train.py [--steps 30] [--ranks 1 2] [--samples 8192]

Random-init weights (throughput and memory do not depend on them) on synthetic 224 px shards written first.
Per configuration: samples/s over the whole run after the first 5 steps (from log.jsonl) and the peak CUDA
memory of rank 0 (``torch.cuda.max_memory_allocated``, in summary.json). The baseline of each row is the
same model without gradient checkpointing (memory ratio and speed ratio printed). Needs CUDA.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from synthetic.tiny_shards import write_tiny_shards  # noqa: E402

CONFIGS = (("ViT-B-32", 256), ("ViT-L-14", 28))


def run(shards: Path, out: Path, model: str, batch: int, ckpt: bool, ranks: int, steps: int, device: str, precision: str) -> dict:
    args = [str(ROOT / "launch/pretrain_clip.py"), "--train-data", str(shards), "--model", model, "--batch-size", str(batch),
            "--max-steps", str(steps), "--workers", "6", "--precision", precision, "--output", str(out), "--device", device,
            "--log-every-steps", "1", "--save-every-steps", str(10 * steps), "--warmup", "5"]
    if ckpt:
        args.append("--grad-checkpointing")
    cmd = [sys.executable, *args] if ranks == 1 else [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(ranks), *args]
    subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT)
    summary = json.loads((out / "summary.json").read_text())
    rows = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()][5:]
    return {"model": model, "batch_per_rank": batch, "grad_checkpointing": ckpt, "ranks": ranks,
            "samples_per_s": statistics.median(r["samples_per_s"] for r in rows),
            "peak_memory_gib": summary.get("peak_memory_gib")}


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--ranks", type=int, nargs="+", default=[1])
    p.add_argument("--samples", type=int, default=8192, help="synthetic samples written for the run")
    p.add_argument("--device", default="cuda", help="cuda (cpu only to smoke-test this script with --model rs-tiny)")
    p.add_argument("--precision", default="amp_bf16")
    p.add_argument("--model", nargs="+", default=None, help="MODEL:BATCH pairs instead of the RemoteCLIP ones")
    p.add_argument("--json", type=Path)
    a = p.parse_args(argv)
    configs = [(m.split(":")[0], int(m.split(":")[1])) for m in a.model] if a.model else CONFIGS
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        shards = write_tiny_shards(Path(tmp) / "shards", n=a.samples, shard_size=512, size=224)
        for model, batch in configs:
            for ranks in a.ranks:
                for ckpt in (False, True):
                    out = Path(tmp) / f"{model}-{ranks}-{ckpt}"
                    results.append(run(shards, out, model, batch, ckpt, ranks, a.steps, a.device, a.precision))
                    r = results[-1]
                    print(f"{model:9s} bs {batch:3d}/rank x {ranks} rank(s) {a.precision} grad-ckpt {str(ckpt):5s}: "
                          f"{r['samples_per_s']:8.1f} samples/s, peak {r['peak_memory_gib']} GiB", flush=True)
    if a.json:
        a.json.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
