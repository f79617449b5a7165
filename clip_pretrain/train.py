"""The contrastive training loop: ``train`` checks the inputs, ``run_training`` builds the model and the :class:`Trainer`
(one optimizer step, one checkpoint), runs :func:`training_loop` and writes the summary (:func:`finish_run`).

``train(cfg)`` runs under torchrun (any number of processes) or alone. Per step: ``accum_freq`` batches -> model ->
open_clip's ``ClipLoss`` (bidirectional InfoNCE; ``local_loss`` + ``gather_with_grad`` across processes) ->
backward (GradScaler for fp16 AMP) -> optional clipping -> AdamW or Adam (``--opt``, ``optim.py``) -> LR schedule
(open_clip_train's cosine, const, const-cooldown) -> logit-scale clamp to [0, ln 100]. Checkpoints are atomic and
hold everything needed to continue mid-epoch (see ``checkpoint.py``/``data.py``); SIGTERM/SIGINT finish the current
step, save, and return.
Evaluation during training (``--val-data``, ``--zeroshot-data``; ``train_eval.py``) runs on rank 0 every N epochs /
steps and at the end; its rows go to log.jsonl, wandb/TensorBoard (``run_log.py``) and the loss curve. The LR schedules
are ``schedules.py``.

Everything that can be checked without the model is checked first (the shards, their build, the first samples,
the --resume checkpoint and whether its settings match), so bad input fails in about a second, not after the
model is built. Rank 0 holds ``OUTPUT/.lock`` for the whole run (a second run on the folder is refused), a
worker started by torchrun stops with a checkpoint when torchrun dies, and a NaN/inf loss stops every rank
before that step touches the weights (:class:`TrainingDiverged`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import random
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from clip_pretrain.checkpoint import (
    ResumeError,
    check_fresh_output,
    read_resume,
    resume_settings,
    rng_state,
    save_checkpoint,
    save_safetensors,
    set_rng_state,
    shard_list,
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
from clip_pretrain.identity import write_identity
from clip_pretrain.models import create_clip
from clip_pretrain.optim import make_optimizer
from clip_pretrain.report import write_loss_curve
from clip_pretrain.run_log import RunLog, trim_log, write_config
from clip_pretrain.schedules import lr_schedule
from clip_pretrain.train_eval import EvalPlan, evaluate_after_training, evaluate_now, plan_evaluation
from rs_common.config import ConfigError, to_dict
from rs_common.guards import RunLock, stop_with_parent, under_torchrun
from rs_common.recipes import global_batch_problem, record_recipe
from rs_common.torch_env import precision_autocast

log = logging.getLogger(__name__)


def lock_towers(model: torch.nn.Module, cfg: TrainConfig) -> None:
    """open_clip_train's --lock-image / --lock-text (LiT) through open_clip's ``lock_image_tower``/``lock_text_tower``.
    open_clip 3.3's ``lock_text_tower`` only freezes LayerNorms along with the rest (it asserts on
    ``freeze_layer_norm=False``), so without --lock-text-freeze-layer-norm the text tower's LayerNorm weights are
    made trainable again here: what that flag's absence meant in open_clip_train."""
    if cfg.lock_image:
        model.lock_image_tower(unlocked_groups=cfg.lock_image_unlocked_groups,
                               freeze_bn_stats=cfg.lock_image_freeze_bn_stats)
    if cfg.lock_text:
        model.lock_text_tower(unlocked_layers=cfg.lock_text_unlocked_layers, freeze_layer_norm=True)
        if not cfg.lock_text_freeze_layer_norm:
            for name, module in model.named_modules():
                if not name.startswith("visual") and isinstance(module, torch.nn.LayerNorm):
                    module.requires_grad_(True)
    if cfg.lock_image or cfg.lock_text:
        frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
        log.info("locked towers: %d of %d parameters frozen", frozen, sum(p.numel() for p in model.parameters()))


def check_precision(precision: str, device: torch.device) -> None:
    """open_clip_train's warning for fp16 (half-precision weights without a GradScaler: small gradients underflow),
    and what a CPU does with the half precisions (they run, slowly; bf16 is the one CPUs have kernels for)."""
    if precision in ("fp16", "pure_fp16"):
        log.warning("--precision %s: weights in float16 without a gradient scaler (as open_clip_train); --precision amp "
                    "is recommended%s", precision, " (and on CPU float16 is slow: bf16 runs faster there)"
                    if device.type == "cpu" else "")


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


def diverged_message(step: int, loss: torch.Tensor, lr: float, last_good: Path | None) -> str:
    """One line: where the run diverged, and where to resume from with a gentler setting (``loss``: the step's
    loss, or with --accum-freq its K losses, of which the first non-finite one is named)."""
    losses = loss.detach().float().reshape(-1)
    bad = losses[~torch.isfinite(losses)]
    value = (bad if len(bad) else losses)[0].item()
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


def step_batches(batches: Iterator[dict], epoch: int, k: int) -> list[dict]:
    """The ``k`` (--accum-freq) loader batches of one optimizer step. Batches of an earlier epoch are the few left
    at its end that cannot fill a whole step: dropped, as open_clip_train drops them."""
    out: list[dict] = []
    while len(out) < k:
        batch = next_batch(batches)
        if batch["epoch"] < epoch:
            continue
        assert batch["epoch"] == epoch, (batch["epoch"], epoch)  # the loader and the loop agree on the epoch
        out.append(batch)
    return out


def accumulate_gradients(train_model: torch.nn.Module, loss_fn: Callable, micro: list[tuple[torch.Tensor, torch.Tensor]],
                         autocast: Callable, backward: Callable[[torch.Tensor], None]) -> torch.Tensor:
    """The gradient of one optimizer step over ``micro`` (K micro-batches of (images, texts)), equal to that of one
    K-times bigger batch; returns the loss of each backward pass, detached (each is the big batch's loss).

    K = 1 is the plain forward/backward. K > 1 is open_clip_train's --accum-freq method: the features of all K
    micro-batches are computed without gradient first; then each micro-batch runs again with gradient and its loss
    is taken with the cached features of the others in their places, so every loss sees all K x B pairs and the K
    backward passes add up to the big batch's gradient. One difference: logit_scale is used with gradient in the
    last pass only (open_clip_train adds its gradient K times over). Under DDP the first K-1 passes skip the
    gradient all-reduce (``no_sync``) and the last one reduces the accumulated sum; ClipLoss gathers the K x B
    features of every rank in each pass (``local_loss``/``gather_with_grad`` as without accumulation)."""
    if len(micro) == 1:
        with autocast():
            out = train_model(*micro[0])
            loss = loss_fn(out["image_features"], out["text_features"], out["logit_scale"])
        backward(loss)
        return loss.detach().reshape(1)
    with torch.no_grad(), autocast():
        cached = [train_model(images, texts) for images, texts in micro]
    image_feats = [c["image_features"] for c in cached]
    text_feats = [c["text_features"] for c in cached]
    ddp = isinstance(train_model, DistributedDataParallel)
    losses = []
    for j, (images, texts) in enumerate(micro):
        last = j == len(micro) - 1
        with nullcontext() if last or not ddp else train_model.no_sync():
            with autocast():
                out = train_model(images, texts)
                scale = out["logit_scale"] if last else out["logit_scale"].detach()
                loss = loss_fn(torch.cat(image_feats[:j] + [out["image_features"]] + image_feats[j + 1:]),
                               torch.cat(text_feats[:j] + [out["text_features"]] + text_feats[j + 1:]), scale)
            backward(loss)
        losses.append(loss.detach())
    return torch.stack(losses)


def train(cfg: TrainConfig, run_steps: int = 0, recipe: str | Path | None = None) -> dict:
    """Train (or continue) per ``cfg``; ``run_steps`` > 0 stops this invocation after that many steps with a
    checkpoint, without changing the schedule (for time-limited cluster jobs and the resume test); ``recipe``: the
    ``--config`` file ``cfg`` was read from, copied verbatim to OUTPUT/recipe.yaml (``rs_common.recipes``).
    Returns a summary dict (also written to OUTPUT/summary.json on rank 0).

    Cheap checks come first, in this order, so bad input fails before the model is built: the global batch
    (``--global-batch-size``), the data (see ``check_training_data``), the eval sets, the output lock (rank 0), the
    --resume checkpoint and its settings. Then rank 0 writes the recipe and the resolved settings
    (OUTPUT/config.yaml)."""
    if under_torchrun():
        stop_with_parent()  # torchrun -9'd or its process group killed: SIGTERM here -> checkpoint, exit
    info = init_distributed(cfg.device)
    try:
        problem = global_batch_problem(cfg.global_batch_size, cfg.batch_size, info.world_size, cfg.accum_freq)
        if problem:
            raise ConfigError(problem)
        urls, sizes = check_training_data(cfg.train_data, cfg.allow_unfinished_build)
        spe = steps_per_epoch(sizes, info.world_size, cfg.workers, cfg.batch_size, cfg.train_num_samples, cfg.accum_freq)
        if spe == 0:
            raise DataError(
                f"{sum(sizes)} samples are too few for batch {cfg.batch_size} x {info.world_size} process(es) x "
                f"{max(cfg.workers, 1)} loader worker(s) x --accum-freq {cfg.accum_freq}: lower --batch-size, "
                "--workers or --accum-freq"
            )
        total_steps = cfg.max_steps or spe * cfg.epochs
        schedule = lr_schedule(cfg, total_steps, spe)
        evals = plan_evaluation(cfg)
        output = Path(cfg.output)
        output.mkdir(parents=True, exist_ok=True)
        with RunLock(output, what="training run") if info.is_main else nullcontext():
            settings = resume_settings(to_dict(cfg), shard_list(urls, sizes))
            if not cfg.resume:
                check_fresh_output(output)
            resume = read_resume(cfg, output, settings)
            plan = TrainPlan(urls, sizes, spe, total_steps, schedule, settings, evals)
            if info.is_main:  # rows after the resume step (or all, when starting afresh) are logged again
                trim_log(output / "log.jsonl", resume[1]["step"] if resume[1] else 0)
                plan.recipe = record_recipe(recipe, output, resuming=resume[1] is not None)
                write_config(cfg, output, plan.recipe)
            return run_training(cfg, info, output, plan, resume, run_steps)
    finally:
        close_distributed(info)


@dataclasses.dataclass
class TrainPlan:
    """What ``train``'s checks settled before the model is built: the shards, the step counts, the LR schedule, the
    settings a checkpoint records, and the evaluation during training."""

    urls: list[str]
    sizes: list[int]
    spe: int  # optimizer steps per epoch
    total_steps: int
    schedule: Callable[[int], float]
    settings: dict
    evals: EvalPlan | None
    recipe: dict | None = None  # rank 0: the --config file's record (rs_common.recipes.record_recipe)


def build_model(cfg: TrainConfig, info: DistInfo, output: Path):
    """The seeded model (its identity written beside every checkpoint on rank 0), towers locked as asked."""
    seed_everything(cfg.seed + info.rank)
    check_precision(cfg.precision, info.device)
    bundle = create_clip(cfg.model, cfg.pretrained or None, device=info.device, precision=cfg.precision,
                         force_quick_gelu=cfg.force_quick_gelu, allow_torchscript=cfg.allow_torchscript)
    if info.is_main:  # the model's name and activation travel with every checkpoint this run writes
        for folder in (output, output / "checkpoints"):
            write_identity(folder, bundle.name, bundle.model, bundle.quick_gelu)
    lock_towers(bundle.model, cfg)
    if cfg.grad_checkpointing:
        bundle.model.set_grad_checkpointing(True)
    return bundle


def make_dataset(cfg: TrainConfig, info: DistInfo, plan: TrainPlan, bundle) -> ShardStream:
    """This rank's batch stream, preprocessed at the model's image size and normalisation."""
    pp = open_clip.get_model_preprocess_cfg(bundle.model)
    size = pp["size"] if isinstance(pp["size"], int) else pp["size"][0]
    return ShardStream(plan.urls, plan.sizes, rank=info.rank, world=info.world_size, batch_size=cfg.batch_size,
                       seed=cfg.seed, transform=RSTrainTransform(size, pp["mean"], pp["std"], cfg.aug),
                       tokenizer=bundle.tokenizer, shuffle_buffer=cfg.shuffle_buffer, num_samples=cfg.train_num_samples,
                       max_bad_in_a_row=cfg.max_consecutive_bad_samples, resampled=cfg.dataset_resampled)


@dataclasses.dataclass
class LoopState:
    """Where the run stands: the optimizer step, the epoch and the step in it, and per loader role the raw samples
    consumed this epoch (``raw``, what an exact resume skips) and the skip counts (``skipped``)."""

    step: int = 0
    epoch: int = 0
    step_in_epoch: int = 0
    raw: dict = dataclasses.field(default_factory=dict)
    skipped: dict = dataclasses.field(default_factory=dict)
    steps_this_run: int = 0

    def advance(self, micro: list[dict], spe: int) -> int | None:
        """Count one optimizer step over the loader batches ``micro``; returns the number of epochs completed when
        this step ended one (the next batch starts the next epoch's plan), else None."""
        self.step, self.step_in_epoch, self.steps_this_run = self.step + 1, self.step_in_epoch + 1, self.steps_this_run + 1
        for batch in micro:
            self.raw[batch["role"]] = batch["raw_consumed"]
            self.skipped[batch["role"]] = batch["skipped"]
        if self.step_in_epoch != spe:
            return None
        self.epoch, self.step_in_epoch, self.raw = self.epoch + 1, 0, {}
        return self.epoch


class Trainer:
    """The model, its optimizer and loss, and where the run stands: what one optimizer step and one checkpoint need."""

    def __init__(self, cfg: TrainConfig, info: DistInfo, output: Path, plan: TrainPlan, bundle):
        self.cfg, self.info, self.output, self.plan, self.bundle = cfg, info, output, plan, bundle
        self.model = self.train_model = bundle.model
        self.optimizer = make_optimizer(self.model, cfg)
        self.scaler = torch.amp.GradScaler("cuda") if cfg.precision == "amp" and info.device.type == "cuda" else None
        self.loss_fn = open_clip.ClipLoss(local_loss=cfg.local_loss, gather_with_grad=cfg.gather_with_grad,
                                          cache_labels=True, rank=info.rank, world_size=info.world_size)
        self.input_dtype = open_clip.get_input_dtype(cfg.precision)
        self.state = LoopState()
        self.last_good: Path | None = None  # the newest checkpoint written (or resumed from)
        self.last_saved = 0  # the step it holds

    def restore(self, resume: tuple[Path | None, dict | None, bool]) -> None:
        """Continue from the --resume checkpoint: weights, optimizer, scaler, position (and the data position and RNG
        states when the data layout is the same; otherwise the next epoch starts)."""
        resume_path, ckpt, data_kept = resume
        self.last_good = resume_path
        if ckpt is None:
            return
        self.model.load_state_dict(ckpt["state_dict"])
        wanted = [{k: v for k, v in group.items() if k != "params"} for group in self.optimizer.param_groups]
        try:
            self.optimizer.load_state_dict(ckpt["optimizer"])
            for group, settings in zip(self.optimizer.param_groups, wanted):  # this run's opt/wd/betas (--resume-force)
                group.update(settings)
        except ValueError as exc:  # --resume-force with other tower locks: other parameters in the optimizer
            raise ResumeError(f"--resume {resume_path}: its optimizer state does not fit this run's trainable "
                              f"parameters ({exc}): resume with the checkpoint's --lock-* settings") from None
        if self.scaler is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        state = self.state
        state.step, state.epoch, state.step_in_epoch = ckpt["step"], ckpt["epoch"], ckpt["step_in_epoch"]
        same_layout = ckpt["world_size"] == self.info.world_size and ckpt["workers"] == self.cfg.workers
        if same_layout and data_kept:
            state.raw = {int(k): v for k, v in ckpt["data"][self.info.rank].items()}
            set_rng_state(ckpt["rng"][self.info.rank])
        elif state.step_in_epoch:
            log.warning("world size/workers/data/batch size changed since the checkpoint: the data position cannot "
                        "carry over, continuing with the next epoch's data")
            state.epoch, state.step_in_epoch = state.epoch + 1, 0
        if self.info.is_main:
            print(f"[train] resumed from {resume_path} at step {state.step} (epoch {state.epoch}, step "
                  f"{state.step_in_epoch} of {self.plan.spe})")

    def wrap(self) -> None:
        """torch.compile and DDP around the model (checkpoints keep saving the plain model's weights)."""
        if self.cfg.torch_compile:
            self.train_model = torch.compile(self.train_model)
        if self.info.distributed:
            ids = [self.info.local_rank] if self.info.device.type == "cuda" else None
            self.train_model = DistributedDataParallel(self.train_model, device_ids=ids)

    def checkpoint_state(self) -> dict:
        """Everything a resume needs; collective (every rank's data position and RNG states are gathered)."""
        state, cfg = self.state, self.cfg
        data = gather_objects({str(k): v for k, v in state.raw.items()}, self.info)
        rngs = gather_objects(rng_state(), self.info)
        return {
            "state_dict": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "step": state.step, "epoch": state.epoch, "step_in_epoch": state.step_in_epoch, "data": data, "rng": rngs,
            "world_size": self.info.world_size, "workers": cfg.workers, "model_name": self.bundle.name,
            "quick_gelu": self.bundle.quick_gelu, "config": to_dict(cfg), "run_settings": self.plan.settings,
        }

    def save(self) -> None:
        """A checkpoint of the current step (rank 0 writes it); weights holding NaN/inf are never saved."""
        if not weights_finite(self.model):  # same weights on every rank: all ranks raise together
            raise TrainingDiverged(f"training diverged by step {self.state.step}: the weights hold NaN/inf, so they "
                                   f"were not saved (last good checkpoint: {self.last_good or 'none'}): lower --lr or "
                                   "set --grad-clip-norm (e.g. 1.0) and resume")
        state = self.checkpoint_state()  # collective: every rank takes part
        path = save_checkpoint(self.output, self.state.step, state, keep=self.cfg.keep_checkpoints) if self.info.is_main else None
        barrier(self.info)
        self.last_good = path or self.last_good

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def autocast(self):
        return precision_autocast(self.cfg.precision, self.info.device)

    def step(self, micro: list[dict], stop: StopFlag) -> tuple[torch.Tensor, float, bool, int | None]:
        """One optimizer step over the loader batches ``micro``: (losses, lr, a rank was signalled, epochs completed
        when the step ended one). A NaN/inf loss on any rank raises before the weights change."""
        lr = self.plan.schedule(self.state.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        device = self.info.device
        losses = accumulate_gradients(
            self.train_model, self.loss_fn,
            [(b["images"].to(device, dtype=self.input_dtype, non_blocking=True), b["texts"].to(device, non_blocking=True))
             for b in micro],
            self.autocast, self.backward)
        # the step's one collective flag, after backward and before the weights change
        signalled, diverged = stop.any_rank(self.info, losses)
        if diverged:
            raise TrainingDiverged(diverged_message(self.state.step + 1, losses, lr, self.last_good))
        self.apply_gradients()
        return losses, lr, signalled, self.state.advance(micro, self.plan.spe)

    def apply_gradients(self) -> None:
        """Optional clipping, the optimizer (through the GradScaler for fp16 AMP), the logit-scale clamp."""
        clip = self.cfg.grad_clip_norm
        if self.scaler is not None:
            if clip:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            if clip:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
            self.optimizer.step()
        with torch.no_grad():
            self.model.logit_scale.clamp_(0, math.log(100))


class StepLog:
    """Every ``--log-every-steps`` steps (and at the last) one row to the run log and the progress bar, with the time
    per step and the throughput since the previous row (evaluations excluded: :meth:`restart_clock`)."""

    def __init__(self, cfg: TrainConfig, info: DistInfo, run_log: RunLog, bar, total_steps: int):
        self.every, self.total_steps, self.run_log, self.bar = cfg.log_every_steps, total_steps, run_log, bar
        self.global_batch = cfg.batch_size * info.world_size * cfg.accum_freq
        self.tick = time.perf_counter()

    def restart_clock(self) -> None:
        self.tick = time.perf_counter()

    def after_step(self, step: int, epoch: int, losses: torch.Tensor, lr: float, model: torch.nn.Module) -> None:
        if step % self.every != 0 and step != self.total_steps:
            return
        now = time.perf_counter()
        n = self.every if step % self.every == 0 else step % self.every
        row = {"step": step, "epoch": epoch, "loss": round(losses[-1].item(), 5), "lr": lr,
               "logit_scale": round(model.logit_scale.exp().item(), 3),
               "step_time_s": round((now - self.tick) / n, 4), "samples_per_s": round(self.global_batch * n / (now - self.tick), 1)}
        self.tick = now
        self.run_log.write(row)
        self.bar.set_postfix(loss=f"{row['loss']:.3f}", lr=f"{lr:.2e}", sps=row["samples_per_s"])


def run_training(cfg: TrainConfig, info: DistInfo, output: Path, plan: TrainPlan,
                 resume: tuple[Path | None, dict | None, bool], run_steps: int) -> dict:
    """The model, the optimizer and the loop, once the inputs have passed ``train``'s checks."""
    bundle = build_model(cfg, info, output)
    dataset = make_dataset(cfg, info, plan, bundle)
    trainer = Trainer(cfg, info, output, plan, bundle)
    trainer.restore(resume)
    trainer.wrap()
    interrupted, last_eval, start_time = training_loop(trainer, dataset, run_steps, resuming=resume[0] is not None)
    if trainer.state.step != trainer.last_saved:
        trainer.save()
    return finish_run(trainer, interrupted, last_eval, time.perf_counter() - start_time)


def training_loop(trainer: Trainer, dataset: ShardStream, run_steps: int,
                  resuming: bool) -> tuple[bool, dict | None, float]:
    """Steps until the schedule ends, ``run_steps`` were taken, or a rank is signalled (checkpoint, then return);
    logs, evaluates and saves as due. Returns (interrupted, the last evaluation row, when the steps started)."""
    cfg, info, plan, state = trainer.cfg, trainer.info, trainer.plan, trainer.state
    run_log = RunLog(cfg, info, trainer.output, start_step=state.step, resuming=resuming)
    bar = tqdm(total=plan.total_steps, initial=state.step, desc="train", unit="step", disable=not info.is_main,
               dynamic_ncols=True)
    steps = StepLog(cfg, info, run_log, bar, plan.total_steps)
    trainer.last_saved, interrupted, last_eval = state.step, False, None
    start_time = time.perf_counter()
    trainer.model.train()
    # the loader counts batches: a step takes accum_freq of them
    dataset.epoch, dataset.resume_step, dataset.resume_raw = state.epoch, state.step_in_epoch * cfg.accum_freq, dict(state.raw)
    batches = iter(make_loader(dataset, cfg.workers))
    try:
        with StopFlag(watch_parent=under_torchrun()) as stop:
            while state.step < plan.total_steps:
                losses, lr, signalled, epoch_done = trainer.step(step_batches(batches, state.epoch, cfg.accum_freq), stop)
                bar.update(1)
                steps.after_step(state.step, state.epoch, losses, lr, trainer.model)
                due = plan.evals.due(state.step, plan.total_steps, epoch_done) if plan.evals else (False, False)
                if any(due) and signalled:
                    log.warning("stopping: the evaluation due at step %d is skipped", state.step)
                elif any(due):
                    last_eval = evaluate_now(trainer.bundle, cfg, due, plan.evals, info, trainer.output, state.step,
                                             state.epoch, run_log)
                    steps.restart_clock()  # the evaluation's time is no training step's
                want_stop = signalled or (run_steps and state.steps_this_run >= run_steps)
                epoch_save = epoch_done and cfg.save_every_epochs and epoch_done % cfg.save_every_epochs == 0
                if state.step % cfg.save_every_steps == 0 or epoch_save or want_stop or state.step >= plan.total_steps:
                    trainer.save()
                    trainer.last_saved = state.step
                if want_stop and state.step < plan.total_steps:
                    interrupted = True
                    break
    finally:
        del batches  # shuts the loader workers down
        bar.close()
        run_log.close()
    return interrupted, last_eval, start_time


def finish_run(trainer: Trainer, interrupted: bool, last_eval: dict | None, elapsed: float) -> dict:
    """The run's summary (skip counts of every rank); on rank 0 after a finished run final.safetensors and the
    evaluation with it, then the loss curve and OUTPUT/summary.json."""
    cfg, info, output, state, plan = trainer.cfg, trainer.info, trainer.output, trainer.state, trainer.plan
    global_batch = cfg.batch_size * info.world_size * cfg.accum_freq
    all_skipped = gather_objects(state.skipped, info)
    summary = {
        "status": "interrupted" if interrupted else "finished", "step": state.step, "total_steps": plan.total_steps,
        "epoch": state.epoch, "steps_per_epoch": plan.spe, "steps_this_run": state.steps_this_run,
        "seconds": round(elapsed, 2),
        "samples_per_s": round(state.steps_this_run * global_batch / elapsed, 1) if elapsed else None,
        "skipped": dict(sum((Counter(s) for per_rank in all_skipped for s in per_rank.values()), Counter())),
        "checkpoint": str(output / "checkpoints" / "latest"),
    }
    if last_eval is not None:
        summary["last_eval"] = last_eval
    if plan.recipe is not None:
        summary["recipe"] = plan.recipe
    if info.device.type == "cuda":
        summary["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(info.device) / 2**30, 3)
    if info.is_main and not interrupted:
        save_safetensors(trainer.model.state_dict(), output / "final.safetensors")
        summary["final"] = str(output / "final.safetensors")
        if cfg.eval.captions or cfg.eval.shards:
            summary["eval"] = evaluate_after_training(cfg, trainer.bundle, info, output / "eval", state.step)
    if info.is_main:
        curve = write_loss_curve(output)
        summary["loss_curve"] = str(curve) if curve else None
        (output / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
