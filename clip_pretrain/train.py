"""The contrastive training loop: one function, readable top to bottom.

``train(cfg)`` runs under torchrun (any number of processes) or alone. Per step: batch -> model -> open_clip's
``ClipLoss`` (bidirectional InfoNCE; ``local_loss`` + ``gather_with_grad`` across processes) -> backward
(GradScaler for fp16 AMP) -> optional clipping -> AdamW -> cosine LR -> logit-scale clamp to [0, ln 100].
Checkpoints are atomic and hold everything needed to continue mid-epoch (see ``checkpoint.py``/``data.py``);
SIGTERM/SIGINT finish the current step, save, and return.
"""

from __future__ import annotations

import json
import logging
import math
import random
import signal
import time
from collections import Counter
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from clip_pretrain.checkpoint import (
    load_checkpoint,
    resolve_resume,
    rng_state,
    save_checkpoint,
    save_safetensors,
    set_rng_state,
)
from clip_pretrain.config import TrainConfig
from clip_pretrain.data import RSTrainTransform, ShardStream, expand_urls, make_loader, shard_sizes, steps_per_epoch
from clip_pretrain.distributed import DistInfo, barrier, close_distributed, init_distributed
from clip_pretrain.models import create_clip
from clip_pretrain.report import write_loss_curve
from shards.config import to_dict

log = logging.getLogger(__name__)


def cosine_lr(step: int, base_lr: float, warmup: int, total: int) -> float:
    """Linear warm-up to ``base_lr`` over ``warmup`` steps, then cosine to 0 at ``total`` (open_clip_train's)."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))) * base_lr


def param_groups(model: torch.nn.Module, wd: float) -> list[dict]:
    """No weight decay on gains, biases, 1-D params and logit_scale (as open_clip_train)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        exclude = p.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name
        (no_decay if exclude else decay).append(p)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": wd}]


def autocast_for(precision: str, device: torch.device):
    if precision == "amp" and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    if precision == "amp_bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


class StopFlag:
    """Set by SIGTERM/SIGINT; the loop checks it between steps, saves and returns."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._old: dict = {}

    def __enter__(self) -> "StopFlag":
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:  # noqa: ANN001
        if self.signal is not None:  # a second signal: stop now
            raise KeyboardInterrupt
        self.signal = signum
        log.warning("signal %d: finishing this step, saving a checkpoint, then exiting", signum)

    def __exit__(self, *exc) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)

    def any_rank(self, info: DistInfo) -> bool:
        """All ranks stop together (one got the signal -> all save and leave), so no rank waits in a collective."""
        flag = torch.tensor([1.0 if self.signal is not None else 0.0], device=info.device)
        if info.distributed:
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())


def gather_objects(obj, info: DistInfo) -> list:
    if not info.distributed:
        return [obj]
    out = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class RunLog:
    """log.jsonl on rank 0, plus wandb when asked (offline unless WANDB_MODE says otherwise)."""

    def __init__(self, cfg: TrainConfig, info: DistInfo, output: Path):
        self.enabled = info.is_main
        self.path = output / "log.jsonl"
        self.wandb = None
        if self.enabled and cfg.report_to == "wandb":
            import os

            import wandb

            self.wandb = wandb.init(project=cfg.wandb_project, dir=str(output), config=to_dict(cfg),
                                    mode=os.environ.get("WANDB_MODE", "offline"), resume="allow")

    def write(self, row: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as fh:
            fh.write(json.dumps(row) + "\n")
        if self.wandb is not None:
            self.wandb.log({k: v for k, v in row.items() if isinstance(v, (int, float))}, step=row.get("step"))

    def close(self) -> None:
        if self.wandb is not None:
            self.wandb.finish()


def evaluate_after_training(cfg: TrainConfig, bundle, info: DistInfo, out: Path) -> dict:
    """Retrieval on ``cfg.eval``'s set with the just-trained model (rank 0); metrics also in OUT/metrics.json."""
    from clip_pretrain.evaluate.retrieval import RetrievalEvalConfig, evaluate_retrieval

    eval_cfg = RetrievalEvalConfig(
        model=cfg.model, captions=cfg.eval.captions or None, images=cfg.eval.images or None, split=cfg.eval.split,
        shards=cfg.eval.shards or None, output=str(out), device=str(info.device), workers=min(cfg.workers, 2),
        save_embeddings=False,
    )
    bundle.model.eval()
    return evaluate_retrieval(eval_cfg, bundle=bundle)


def train(cfg: TrainConfig, run_steps: int = 0) -> dict:
    """Train (or continue) per ``cfg``; ``run_steps`` > 0 stops this invocation after that many steps with a
    checkpoint, without changing the schedule (for time-limited cluster jobs and the resume test).
    Returns a summary dict (also written to OUTPUT/summary.json on rank 0)."""
    info = init_distributed(cfg.device)
    output = Path(cfg.output)
    output.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.seed + info.rank)

    bundle = create_clip(cfg.model, cfg.pretrained or None, device=info.device, precision=cfg.precision,
                         force_quick_gelu=cfg.force_quick_gelu)
    model = bundle.model
    if cfg.grad_checkpointing:
        model.set_grad_checkpointing(True)
    pp = open_clip.get_model_preprocess_cfg(model)
    size = pp["size"] if isinstance(pp["size"], int) else pp["size"][0]
    urls = expand_urls(cfg.train_data)
    sizes = shard_sizes(urls)
    spe = steps_per_epoch(sizes, info.world_size, cfg.workers, cfg.batch_size, cfg.train_num_samples)
    if spe == 0:
        raise ValueError(
            f"{sum(sizes)} samples are too few for batch {cfg.batch_size} x {info.world_size} process(es) x "
            f"{max(cfg.workers, 1)} loader worker(s): lower --batch-size or --workers"
        )
    total_steps = cfg.max_steps or spe * cfg.epochs
    dataset = ShardStream(urls, sizes, rank=info.rank, world=info.world_size, batch_size=cfg.batch_size, seed=cfg.seed,
                          transform=RSTrainTransform(size, pp["mean"], pp["std"], cfg.aug), tokenizer=bundle.tokenizer,
                          shuffle_buffer=cfg.shuffle_buffer, num_samples=cfg.train_num_samples)

    optimizer = torch.optim.AdamW(param_groups(model, cfg.wd), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps)
    scaler = torch.amp.GradScaler("cuda") if cfg.precision == "amp" and info.device.type == "cuda" else None
    loss_fn = open_clip.ClipLoss(local_loss=cfg.local_loss, gather_with_grad=cfg.gather_with_grad, cache_labels=True,
                                 rank=info.rank, world_size=info.world_size)

    step, epoch, step_in_epoch, raw = 0, 0, 0, {}
    skipped: dict[int, dict] = {}
    resume_path = resolve_resume(cfg.resume, output)
    if resume_path is not None:
        ckpt = load_checkpoint(resume_path)
        model.load_state_dict(ckpt["state_dict"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if scaler is not None and ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        step, epoch, step_in_epoch = ckpt["step"], ckpt["epoch"], ckpt["step_in_epoch"]
        same_layout = ckpt["world_size"] == info.world_size and ckpt["workers"] == cfg.workers
        if same_layout:
            raw = {int(k): v for k, v in ckpt["data"][info.rank].items()}
            set_rng_state(ckpt["rng"][info.rank])
        elif step_in_epoch:
            log.warning("world size/workers changed since the checkpoint: the data position cannot carry over, "
                        "continuing with the next epoch's data")
            epoch, step_in_epoch = epoch + 1, 0
        if info.is_main:
            print(f"[train] resumed from {resume_path} at step {step} (epoch {epoch}, step {step_in_epoch} of {spe})")
    train_model = model
    if cfg.torch_compile:
        train_model = torch.compile(train_model)
    if info.distributed:
        train_model = DistributedDataParallel(train_model, device_ids=[info.local_rank] if info.device.type == "cuda" else None)

    def checkpoint_state() -> dict:
        data = gather_objects({str(k): v for k, v in raw.items()}, info)
        rngs = gather_objects(rng_state(), info)
        return {
            "state_dict": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "step": step, "epoch": epoch, "step_in_epoch": step_in_epoch, "data": data, "rng": rngs,
            "world_size": info.world_size, "workers": cfg.workers, "model_name": cfg.model, "config": to_dict(cfg),
        }

    def save() -> Path | None:
        state = checkpoint_state()  # collective: every rank takes part
        path = save_checkpoint(output, step, state, keep=cfg.keep_checkpoints) if info.is_main else None
        barrier(info)
        return path

    run_log = RunLog(cfg, info, output)
    bar = tqdm(total=total_steps, initial=step, desc="train", unit="step", disable=not info.is_main, dynamic_ncols=True)
    global_batch = cfg.batch_size * info.world_size
    steps_this_run, last_saved, interrupted = 0, step, False
    start_time, tick = time.perf_counter(), time.perf_counter()
    model.train()
    dataset.epoch, dataset.resume_step, dataset.resume_raw = epoch, step_in_epoch, dict(raw)
    batches = iter(make_loader(dataset, cfg.workers))
    with StopFlag() as stop:
        while step < total_steps:
            batch = next(batches)
            assert batch["epoch"] == epoch, (batch["epoch"], epoch)  # the loader and the loop agree on the epoch
            lr = cosine_lr(step, cfg.lr, cfg.warmup, total_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            images = batch["images"].to(info.device, non_blocking=True)
            texts = batch["texts"].to(info.device, non_blocking=True)
            with autocast_for(cfg.precision, info.device):
                out = train_model(images, texts)
                loss = loss_fn(out["image_features"], out["text_features"], out["logit_scale"])
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                if cfg.grad_clip_norm:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip_norm)
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                if cfg.grad_clip_norm:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip_norm)
                optimizer.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))
            step, step_in_epoch, steps_this_run = step + 1, step_in_epoch + 1, steps_this_run + 1
            raw[batch["role"]] = batch["raw_consumed"]
            skipped[batch["role"]] = batch["skipped"]
            if step_in_epoch == spe:  # epoch done: the next batch starts the next epoch's plan
                epoch, step_in_epoch, raw = epoch + 1, 0, {}
            bar.update(1)
            if step % cfg.log_every_steps == 0 or step == total_steps:
                now = time.perf_counter()
                n = cfg.log_every_steps if step % cfg.log_every_steps == 0 else step % cfg.log_every_steps
                row = {"step": step, "epoch": epoch, "loss": round(loss.item(), 5), "lr": lr,
                       "logit_scale": round(model.logit_scale.exp().item(), 3),
                       "step_time_s": round((now - tick) / n, 4), "samples_per_s": round(global_batch * n / (now - tick), 1)}
                tick = now
                run_log.write(row)
                bar.set_postfix(loss=f"{row['loss']:.3f}", lr=f"{lr:.2e}", sps=row["samples_per_s"])
            want_stop = stop.any_rank(info) or (run_steps and steps_this_run >= run_steps)
            if step % cfg.save_every_steps == 0 or want_stop or step >= total_steps:
                save()
                last_saved = step
            if want_stop and step < total_steps:
                interrupted = True
                break
    del batches  # shuts the loader workers down
    bar.close()
    if last_saved != step:
        save()
    elapsed = time.perf_counter() - start_time
    all_skipped = gather_objects(skipped, info)
    summary = {
        "status": "interrupted" if interrupted else "finished", "step": step, "total_steps": total_steps,
        "epoch": epoch, "steps_per_epoch": spe, "steps_this_run": steps_this_run, "seconds": round(elapsed, 2),
        "samples_per_s": round(steps_this_run * global_batch / elapsed, 1) if elapsed else None,
        "skipped": dict(sum((Counter(s) for per_rank in all_skipped for s in per_rank.values()), Counter())),
        "checkpoint": str(output / "checkpoints" / "latest"),
    }
    if info.device.type == "cuda":
        summary["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(info.device) / 2**30, 3)
    if info.is_main and not interrupted:
        save_safetensors(model.state_dict(), output / "final.safetensors")
        summary["final"] = str(output / "final.safetensors")
        if cfg.eval.captions or cfg.eval.shards:
            summary["eval"] = evaluate_after_training(cfg, bundle, info, output / "eval")
    if info.is_main:
        curve = write_loss_curve(output)
        summary["loss_curve"] = str(curve) if curve else None
        (output / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    run_log.close()
    close_distributed(info)
    return summary
