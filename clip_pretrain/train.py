"""The contrastive training loop: one function, readable top to bottom.

``train(cfg)`` runs under torchrun (any number of processes) or alone. Per step: batch -> model -> open_clip's
``ClipLoss`` (bidirectional InfoNCE; ``local_loss`` + ``gather_with_grad`` across processes) -> backward
(GradScaler for fp16 AMP) -> optional clipping -> AdamW -> cosine LR -> logit-scale clamp to [0, ln 100].
Checkpoints are atomic and hold everything needed to continue mid-epoch (see ``checkpoint.py``/``data.py``);
SIGTERM/SIGINT finish the current step, save, and return.

Everything that can be checked without the model is checked first (the shards, their build, the first samples,
the --resume checkpoint and whether its settings match), so bad input fails in about a second, not after the
model is built. Rank 0 holds ``OUTPUT/.lock`` for the whole run (a second run on the folder is refused), a
worker started by torchrun stops with a checkpoint when torchrun dies, and a NaN/inf loss stops every rank
before that step touches the weights (:class:`TrainingDiverged`).
"""

from __future__ import annotations

import json
import logging
import math
import os
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
    DATA_SETTINGS,
    ResumeError,
    changed_settings,
    list_checkpoints,
    load_checkpoint,
    resolve_resume,
    resume_settings,
    rng_state,
    save_checkpoint,
    save_safetensors,
    set_rng_state,
)
from clip_pretrain.config import TrainConfig
from clip_pretrain.data import (
    DataError,
    RSTrainTransform,
    ShardStream,
    check_training_data,
    make_loader,
    steps_per_epoch,
    worker_error,
)
from clip_pretrain.distributed import DistInfo, barrier, close_distributed, init_distributed
from clip_pretrain.models import CheckpointError, create_clip
from clip_pretrain.report import write_loss_curve
from shards.config import to_dict
from shards.guards import RunLock, stop_with_parent, under_torchrun

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


class TrainingDiverged(ValueError):
    """The loss became NaN/inf: the run stopped before that step changed the weights or reached a checkpoint."""


class StopFlag:
    """Set by SIGTERM/SIGINT (or, under torchrun, by the launcher going away); the loop checks it every step,
    saves and returns."""

    def __init__(self, watch_parent: bool = False) -> None:
        self.signal: int | None = None
        self._old: dict = {}
        # torchrun's workers live in sessions of their own: a launcher killed with -9 leaves them orphaned, which
        # a changed parent pid shows even where the kernel's parent-death signal was not delivered
        self._parent = os.getppid() if watch_parent else None

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

    def poll_parent(self) -> None:
        """Stop like on SIGTERM once the launcher that started this process has exited."""
        if self._parent is not None and self.signal is None and os.getppid() != self._parent:
            self.signal = signal.SIGTERM
            log.warning("the launcher (pid %d) has exited: finishing this step, saving a checkpoint, then exiting",
                        self._parent)

    def any_rank(self, info: DistInfo, loss: torch.Tensor | None = None) -> tuple[bool, bool]:
        """(stop, diverged) agreed by all ranks with ONE all_reduce per step: stop when any rank got a signal (all
        save and leave together, so no rank waits in a collective), diverged when any rank's loss is NaN/inf."""
        self.poll_parent()
        stop = torch.tensor(1.0 if self.signal is not None else 0.0, device=info.device)
        bad = (~torch.isfinite(loss.detach().float())).any().float() if loss is not None else torch.zeros_like(stop)
        flags = torch.stack([stop, bad.to(stop.device)])
        if info.distributed:
            dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        stop_any, bad_any = flags.tolist()
        return bool(stop_any), bool(bad_any)


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


def trim_log(path: Path, step: int) -> None:
    """Keep the rows of ``path`` (log.jsonl) up to ``step``, atomically: a run resumed from step N repeats the
    steps after N, whose rows a killed run had already logged. A half-written last line is dropped too."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int) and row["step"] <= step:
            kept.append(line)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in kept))
    os.replace(tmp, path)


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


REQUIRED_KEYS = ("state_dict", "optimizer", "step", "epoch", "step_in_epoch", "data", "rng", "world_size", "workers")


def shard_list(urls: list[str], sizes: list[int]) -> list[list]:
    """``[[absolute path, samples], ...]``: what the checkpoint records of the data, so a resume can tell."""
    return [[u if "://" in u else os.path.abspath(u), n] for u, n in zip(urls, sizes)]


def read_resume(cfg: TrainConfig, output: Path, settings: dict) -> tuple[Path | None, dict | None, bool]:
    """The --resume checkpoint (path, contents) checked against this run, and whether its data position still
    means anything. Refuses (ResumeError) a checkpoint whose run had other settings that change how training
    continues, unless --resume-force, which warns and names them. Older checkpoints lacking a recorded setting
    are not held to it."""
    path = resolve_resume(cfg.resume, output)
    if path is None:
        return None, None, True
    ckpt = load_checkpoint(path)
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: lacks {', '.join(missing)}: not a training checkpoint of this tool "
                              "(to start from weights alone use --pretrained)")
    old = ckpt.get("run_settings") or resume_settings(ckpt.get("config") or {}, None)
    changes = changed_settings(old, settings)
    if changes and not cfg.resume_force:
        raise ResumeError(f"--resume {path}: the checkpoint's run had other settings: {'; '.join(changes)}: rerun with "
                          "the checkpoint's settings, or pass --resume-force to continue with the new ones")
    if changes:
        log.warning("--resume-force: continuing %s with changed settings: %s", path, "; ".join(changes))
    data_kept = not any(c.split(" ", 1)[0] in DATA_SETTINGS for c in changes)
    return path, ckpt, data_kept


def check_fresh_output(output: Path) -> None:
    """A run without --resume must not write over another run's checkpoints and weights (open_clip_train refuses
    an existing experiment too): continue it with --resume latest, or start in a new folder."""
    done = [p for p in (output / "final.safetensors",) if p.exists()] + list_checkpoints(output)
    if done:
        raise ResumeError(f"--output {output} already holds a training run ({done[-1].name}); pass --resume latest to "
                          "continue it, or choose a new --output")


def diverged_message(step: int, loss: torch.Tensor, lr: float, last_good: Path | None) -> str:
    """One line: where the run diverged, and where to resume from with a gentler setting."""
    value = loss.detach().float().item()
    where = f"last good checkpoint: {last_good}" if last_good else "no checkpoint was saved before it"
    return (f"training diverged at step {step}: the loss is {value} (lr {lr:.3g}); that step was not applied and nothing "
            f"of it was saved ({where}): lower --lr or set --grad-clip-norm (e.g. 1.0) and resume")


def weights_finite(model: torch.nn.Module) -> bool:
    """True when no parameter holds NaN/inf (checked before every checkpoint: bad weights are never saved)."""
    return bool(torch.stack([torch.isfinite(p).all() for p in model.parameters()]).all())


def next_batch(batches) -> dict:
    """The loader's next batch; a DataError from a loader worker arrives as its own one-line message."""
    try:
        return next(batches)
    except DataError as exc:
        raise worker_error(exc) from None


def train(cfg: TrainConfig, run_steps: int = 0) -> dict:
    """Train (or continue) per ``cfg``; ``run_steps`` > 0 stops this invocation after that many steps with a
    checkpoint, without changing the schedule (for time-limited cluster jobs and the resume test).
    Returns a summary dict (also written to OUTPUT/summary.json on rank 0).

    Cheap checks come first, in this order, so bad input fails before the model is built: the data (see
    ``check_training_data``), the output lock (rank 0), the --resume checkpoint and its settings."""
    if under_torchrun():
        stop_with_parent()  # torchrun -9'd or its process group killed: SIGTERM here -> checkpoint, exit
    info = init_distributed(cfg.device)
    try:
        urls, sizes = check_training_data(cfg.train_data, cfg.allow_unfinished_build)
        spe = steps_per_epoch(sizes, info.world_size, cfg.workers, cfg.batch_size, cfg.train_num_samples)
        if spe == 0:
            raise DataError(
                f"{sum(sizes)} samples are too few for batch {cfg.batch_size} x {info.world_size} process(es) x "
                f"{max(cfg.workers, 1)} loader worker(s): lower --batch-size or --workers"
            )
        output = Path(cfg.output)
        output.mkdir(parents=True, exist_ok=True)
        with RunLock(output, what="training run") if info.is_main else nullcontext():
            settings = resume_settings(to_dict(cfg), shard_list(urls, sizes))
            if not cfg.resume:
                check_fresh_output(output)
            resume = read_resume(cfg, output, settings)
            if info.is_main:  # rows after the resume step (or all, when starting afresh) are logged again
                trim_log(output / "log.jsonl", resume[1]["step"] if resume[1] else 0)
            return run_training(cfg, info, output, urls, sizes, spe, settings, resume, run_steps)
    finally:
        close_distributed(info)


def run_training(cfg: TrainConfig, info: DistInfo, output: Path, urls: list[str], sizes: list[int], spe: int,
                 settings: dict, resume: tuple[Path | None, dict | None, bool], run_steps: int) -> dict:
    """The model, the optimizer and the loop, once the inputs have passed ``train``'s checks."""
    seed_everything(cfg.seed + info.rank)
    bundle = create_clip(cfg.model, cfg.pretrained or None, device=info.device, precision=cfg.precision,
                         force_quick_gelu=cfg.force_quick_gelu, allow_torchscript=cfg.allow_torchscript)
    model = bundle.model
    if cfg.grad_checkpointing:
        model.set_grad_checkpointing(True)
    pp = open_clip.get_model_preprocess_cfg(model)
    size = pp["size"] if isinstance(pp["size"], int) else pp["size"][0]
    total_steps = cfg.max_steps or spe * cfg.epochs
    dataset = ShardStream(urls, sizes, rank=info.rank, world=info.world_size, batch_size=cfg.batch_size, seed=cfg.seed,
                          transform=RSTrainTransform(size, pp["mean"], pp["std"], cfg.aug), tokenizer=bundle.tokenizer,
                          shuffle_buffer=cfg.shuffle_buffer, num_samples=cfg.train_num_samples,
                          max_bad_in_a_row=cfg.max_consecutive_bad_samples)

    optimizer = torch.optim.AdamW(param_groups(model, cfg.wd), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps)
    scaler = torch.amp.GradScaler("cuda") if cfg.precision == "amp" and info.device.type == "cuda" else None
    loss_fn = open_clip.ClipLoss(local_loss=cfg.local_loss, gather_with_grad=cfg.gather_with_grad, cache_labels=True,
                                 rank=info.rank, world_size=info.world_size)

    step, epoch, step_in_epoch, raw = 0, 0, 0, {}
    skipped: dict[int, dict] = {}
    resume_path, ckpt, data_kept = resume
    if ckpt is not None:
        model.load_state_dict(ckpt["state_dict"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if scaler is not None and ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        step, epoch, step_in_epoch = ckpt["step"], ckpt["epoch"], ckpt["step_in_epoch"]
        same_layout = ckpt["world_size"] == info.world_size and ckpt["workers"] == cfg.workers
        if same_layout and data_kept:
            raw = {int(k): v for k, v in ckpt["data"][info.rank].items()}
            set_rng_state(ckpt["rng"][info.rank])
        elif step_in_epoch:
            log.warning("world size/workers/data/batch size changed since the checkpoint: the data position cannot "
                        "carry over, continuing with the next epoch's data")
            epoch, step_in_epoch = epoch + 1, 0
        if info.is_main:
            print(f"[train] resumed from {resume_path} at step {step} (epoch {epoch}, step {step_in_epoch} of {spe})")
        del ckpt
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
            "run_settings": settings,
        }

    last_good = resume_path

    def save() -> None:
        nonlocal last_good
        if not weights_finite(model):  # same weights on every rank: all ranks raise together
            raise TrainingDiverged(f"training diverged by step {step}: the weights hold NaN/inf, so they were not "
                                   f"saved (last good checkpoint: {last_good or 'none'}): lower --lr or set "
                                   "--grad-clip-norm (e.g. 1.0) and resume")
        state = checkpoint_state()  # collective: every rank takes part
        path = save_checkpoint(output, step, state, keep=cfg.keep_checkpoints) if info.is_main else None
        barrier(info)
        last_good = path or last_good

    run_log = RunLog(cfg, info, output)
    bar = tqdm(total=total_steps, initial=step, desc="train", unit="step", disable=not info.is_main, dynamic_ncols=True)
    global_batch = cfg.batch_size * info.world_size
    steps_this_run, last_saved, interrupted = 0, step, False
    start_time, tick = time.perf_counter(), time.perf_counter()
    model.train()
    dataset.epoch, dataset.resume_step, dataset.resume_raw = epoch, step_in_epoch, dict(raw)
    batches = iter(make_loader(dataset, cfg.workers))
    try:
        with StopFlag(watch_parent=under_torchrun()) as stop:
            while step < total_steps:
                batch = next_batch(batches)
                assert batch["epoch"] == epoch, (batch["epoch"], epoch)  # the loader and the loop agree on the epoch
                lr = cosine_lr(step, cfg.lr, cfg.warmup, total_steps)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                images = batch["images"].to(info.device, non_blocking=True)
                texts = batch["texts"].to(info.device, non_blocking=True)
                with autocast_for(cfg.precision, info.device):
                    out = train_model(images, texts)
                    loss = loss_fn(out["image_features"], out["text_features"], out["logit_scale"])
                signalled, diverged = stop.any_rank(info, loss)  # the step's one collective flag, before backward
                if diverged:
                    raise TrainingDiverged(diverged_message(step + 1, loss, lr, last_good))
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
                want_stop = signalled or (run_steps and steps_this_run >= run_steps)
                if step % cfg.save_every_steps == 0 or want_stop or step >= total_steps:
                    save()
                    last_saved = step
                if want_stop and step < total_steps:
                    interrupted = True
                    break
    finally:
        del batches  # shuts the loader workers down
        bar.close()
        run_log.close()
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
    return summary
