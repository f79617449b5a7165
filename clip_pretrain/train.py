"""The contrastive training loop: one function, readable top to bottom.

``train(cfg)`` runs under torchrun (any number of processes) or alone. Per step: ``accum_freq`` batches -> model ->
open_clip's ``ClipLoss`` (bidirectional InfoNCE; ``local_loss`` + ``gather_with_grad`` across processes) ->
backward (GradScaler for fp16 AMP) -> optional clipping -> AdamW -> LR schedule (open_clip_train's cosine, const,
const-cooldown) -> logit-scale clamp to [0, ln 100]. Checkpoints are atomic and hold everything needed to continue
mid-epoch (see ``checkpoint.py``/``data.py``); SIGTERM/SIGINT finish the current step, save, and return.
Evaluation during training (``--val-data``, ``--zeroshot-data``) runs on rank 0 every N epochs / steps and at the
end; its rows go to log.jsonl, wandb/TensorBoard and the loss curve.

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
import secrets
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.distributed as dist
import torch.nn.functional as F
import yaml
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
from clip_pretrain.config import TrainConfig, report_targets
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
from clip_pretrain.models import CheckpointError, create_clip
from clip_pretrain.report import write_loss_curve
from rs_common.config import to_dict
from rs_common.guards import RunLock, stop_with_parent, under_torchrun

log = logging.getLogger(__name__)


def cosine_lr(step: int, base_lr: float, warmup: int, total: int) -> float:
    """Linear warm-up to ``base_lr`` over ``warmup`` steps, then cosine to 0 at ``total`` (open_clip_train's)."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))) * base_lr


def const_lr(step: int, base_lr: float, warmup: int) -> float:
    """Linear warm-up, then ``base_lr`` (open_clip_train's ``const``)."""
    return base_lr * (step + 1) / warmup if step < warmup else base_lr


def const_cooldown_lr(step: int, base_lr: float, warmup: int, total: int, cooldown: int, power: float = 1.0,
                      end_lr: float = 0.0) -> float:
    """Linear warm-up, ``base_lr``, then over the last ``cooldown`` steps a decay ``(1 - e/es) ** power`` from
    ``base_lr`` to ``end_lr`` (open_clip_train's ``const-cooldown``, formula for formula)."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    start = total - cooldown
    if step < start:
        return base_lr
    return (1 - (step - start) / (total - start)) ** power * (base_lr - end_lr) + end_lr


def lr_schedule(cfg: TrainConfig, total_steps: int, spe: int) -> Callable[[int], float]:
    """``step -> lr`` for ``cfg.lr_scheduler``; the cooldown is counted in epochs of optimizer steps, as
    open_clip_train counts it (``steps per epoch // accum_freq * epochs_cooldown``)."""
    if cfg.lr_scheduler == "const":
        return lambda step: const_lr(step, cfg.lr, cfg.warmup)
    if cfg.lr_scheduler == "const-cooldown":
        cooldown = spe * cfg.epochs_cooldown  # longer than the run: the decay starts before step 0, as there
        return lambda step: const_cooldown_lr(step, cfg.lr, cfg.warmup, total_steps, cooldown, cfg.lr_cooldown_power,
                                              cfg.lr_cooldown_end)
    return lambda step: cosine_lr(step, cfg.lr, cfg.warmup, total_steps)


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


WANDB_ID_FILE = "wandb_run_id"


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``path`` via a temporary file and a rename: a killed run never leaves it half-written."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_config(cfg: TrainConfig, output: Path) -> Path:
    """OUTPUT/config.yaml: the resolved settings (defaults < YAML < flags, open_clip_train's names mapped), which
    ``--config OUTPUT/config.yaml`` loads back into the same TrainConfig."""
    path = output / "config.yaml"
    atomic_write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))
    return path


def wandb_run_id(output: Path, resuming: bool) -> str:
    """The wandb run of this run directory: a resumed run continues the id kept in OUTPUT/wandb_run_id (one wandb
    run, not two); a fresh start gets a new id, kept there."""
    path = output / WANDB_ID_FILE
    if resuming and path.is_file() and path.read_text().strip():
        return path.read_text().strip()
    run_id = secrets.token_hex(4)  # wandb's id alphabet; its generate_id helper moved between wandb versions
    atomic_write_text(path, run_id + "\n")
    return run_id


class RunLog:
    """log.jsonl on rank 0, plus wandb and/or TensorBoard when --report-to asks (wandb offline unless WANDB_MODE says
    otherwise). ``start_step``: the step this invocation continues from; TensorBoard hides the events a killed
    run had logged after it (they are logged again), and a resumed run logs into the same wandb run."""

    def __init__(self, cfg: TrainConfig, info: DistInfo, output: Path, start_step: int = 0, resuming: bool = False):
        self.enabled = info.is_main
        self.path = output / "log.jsonl"
        self.wandb = self.tensorboard = None
        targets = report_targets(cfg.report_to) if self.enabled else set()
        if "wandb" in targets:
            import wandb

            self.wandb = wandb.init(project=cfg.wandb_project, dir=str(output), config=to_dict(cfg), name=output.name,
                                    id=wandb_run_id(output, resuming), resume="allow",
                                    mode=os.environ.get("WANDB_MODE", "offline"))
        if "tensorboard" in targets:
            from torch.utils.tensorboard import SummaryWriter

            self.tensorboard = SummaryWriter(str(output / "tensorboard"), purge_step=start_step + 1)

    def write(self, row: dict) -> None:
        """One row (a training step's, or an evaluation's with ``"kind": "eval"``) to every target, at its step."""
        if not self.enabled:
            return
        with open(self.path, "a") as fh:
            fh.write(json.dumps(row) + "\n")
        numbers = {k: v for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step"}
        if self.wandb is not None:
            self.wandb.log(numbers, step=row.get("step"))
        if self.tensorboard is not None:
            for key, value in numbers.items():
                self.tensorboard.add_scalar(key, value, row.get("step"))
            self.tensorboard.flush()

    def close(self) -> None:
        if self.wandb is not None:
            self.wandb.finish()
        if self.tensorboard is not None:
            self.tensorboard.close()


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


def evaluate_after_training(cfg: TrainConfig, bundle, info: DistInfo, out: Path, step: int) -> dict:
    """Retrieval on ``cfg.eval``'s set with the just-trained model (rank 0); metrics also in OUT/metrics.json, whose
    ``model_source`` (and the report's header) names the run and the step scored."""
    from clip_pretrain.evaluate.retrieval import RetrievalEvalConfig, evaluate_retrieval

    eval_cfg = RetrievalEvalConfig(
        model=bundle.name, captions=cfg.eval.captions or None, images=cfg.eval.images or None, split=cfg.eval.split,
        shards=cfg.eval.shards or None, output=str(out), device=str(info.device), workers=min(cfg.workers, 2),
        save_embeddings=False,
    )
    bundle.model.eval()
    source = f"training run {out.parent.resolve()}, step {step} (its final.safetensors)"
    return evaluate_retrieval(eval_cfg, bundle=bundle, source=source)


# ---------------------------------------------------------------- evaluation during training


@dataclasses.dataclass
class EvalPlan:
    """What evaluation during training reads and when: the --val-data set (listed once, before the model is built),
    the --zeroshot-data folder, and the frequencies (epochs; ``every_steps`` steps)."""

    val_set: object | None  # clip_pretrain.evaluate.retrieval.EvalSet
    zeroshot_data: str
    val_frequency: int
    zeroshot_frequency: int
    every_steps: int

    def due(self, step: int, total_steps: int, epoch_done: int | None) -> tuple[bool, bool]:
        """(validation, zero-shot) after ``step``: every N epochs (``epoch_done`` = the number of epochs just
        completed, None mid-epoch) as open_clip_train, every ``every_steps`` steps, and at the end."""
        def wanted(freq: int) -> bool:
            if self.every_steps and (step % self.every_steps == 0 or step == total_steps):
                return True
            return bool(freq) and (step == total_steps or (epoch_done is not None and epoch_done % freq == 0))

        return (self.val_set is not None and wanted(self.val_frequency),
                bool(self.zeroshot_data) and wanted(self.zeroshot_frequency))


def plan_evaluation(cfg: TrainConfig) -> EvalPlan | None:
    """The eval sets of --val-data / --zeroshot-data, checked before the model is built (a wrong path fails in a
    second with the evaluator's one-line EvalError, not after the first epoch)."""
    if not cfg.val_data and not cfg.zeroshot_data:
        return None
    val_set = None
    if cfg.val_data:
        from clip_pretrain.evaluate.retrieval import load_shard_eval_set

        val_set = load_shard_eval_set(cfg.val_data)
        if cfg.val_num_samples:
            val_set = dataclasses.replace(val_set, items=val_set.items[:cfg.val_num_samples])
    if cfg.zeroshot_data:
        from clip_pretrain.evaluate.zeroshot import list_class_folders

        list_class_folders(cfg.zeroshot_data)
    return EvalPlan(val_set, cfg.zeroshot_data, cfg.val_frequency, cfg.zeroshot_frequency, cfg.eval_every_steps)


class CastInputs(torch.nn.Module):
    """The model as the evaluators call it (``encode_image``/``encode_text``), with images cast to the weights' dtype:
    they feed float32 pixels, which an fp16/bf16 model (``--precision fp16|bf16|pure_*``) refuses on CPU."""

    def __init__(self, model: torch.nn.Module, dtype: torch.dtype):
        super().__init__()
        self.model, self.dtype = model, dtype

    def encode_image(self, image: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        return self.model.encode_image(image.to(self.dtype), normalize=normalize)

    def encode_text(self, text: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        return self.model.encode_text(text, normalize=normalize)


@contextmanager
def rng_preserved():
    """Run a block without moving any RNG the training loop reads: evaluating must not change what a run does
    next, or a run that evaluated would differ from its resumed continuation."""
    state = rng_state()
    try:
        yield
    finally:
        set_rng_state(state)


def clip_val_loss(image_emb: np.ndarray, text_emb: np.ndarray, text_to_image: np.ndarray, logit_scale: float,
                  batch_size: int) -> float:
    """open_clip_train's ``clip_val_loss``: the contrastive loss of each batch of ``batch_size`` images with one
    caption each (its first), averaged over images; from the evaluator's unit-norm embeddings (the same features the
    model's forward returns)."""
    imaged, first = np.unique(text_to_image, return_index=True)  # the images with captions, each one's first
    images, texts = torch.from_numpy(image_emb[imaged]), torch.from_numpy(text_emb[first])
    total = 0.0
    for start in range(0, len(images), batch_size):
        logits = logit_scale * images[start:start + batch_size] @ texts[start:start + batch_size].T
        labels = torch.arange(len(logits))
        total += float((F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2) * len(logits)
    return total / max(len(images), 1)


def validation_metrics(bundle, eval_set, cfg: TrainConfig, device: torch.device, logit_scale: float) -> dict:
    """Validation loss and retrieval recall@1/5/10 (i2t, t2i, mean) on --val-data, through the retrieval
    evaluator's own embedding and recall functions."""
    from clip_pretrain.evaluate.retrieval import embed_eval_set, recall_at_k

    image_emb, text_emb, text_to_image, _, _ = embed_eval_set(bundle, eval_set, device, cfg.batch_size,
                                                              min(cfg.workers, 2))
    recall = recall_at_k(image_emb, text_emb, text_to_image, use_gpu=None if device.type == "cuda" else False)
    out = {"val_loss": round(clip_val_loss(image_emb, text_emb, text_to_image, logit_scale, cfg.batch_size), 5)}
    out.update({f"val_{k}": round(v, 3) if isinstance(v, float) else v for k, v in recall.items()})
    return out


def zeroshot_metrics(bundle, cfg: TrainConfig, device: torch.device, out: Path) -> dict:
    """Zero-shot top-1/top-5 on --zeroshot-data through the zero-shot evaluator (its files go to ``out``)."""
    from clip_pretrain.evaluate.zeroshot import ZeroShotConfig, evaluate_zeroshot

    metrics = evaluate_zeroshot(ZeroShotConfig(model=bundle.name, data=cfg.zeroshot_data, output=str(out),
                                               batch_size=cfg.batch_size, device=str(device),
                                               workers=min(cfg.workers, 2)), bundle=bundle)
    return {"zeroshot_top1": round(metrics["top1"], 3), "zeroshot_top5": round(metrics["top5"], 3)}


def evaluate_during_training(bundle, cfg: TrainConfig, which: tuple[bool, bool], plan: EvalPlan, device: torch.device,
                             out: Path) -> dict:
    """The evaluations due (``which`` = (validation, zero-shot)) with the model as it is now (rank 0), leaving it in
    training mode and every RNG as it was. Returns the metrics for the eval row."""
    model = bundle.model
    dtype = open_clip.get_input_dtype(cfg.precision)
    eval_bundle = dataclasses.replace(bundle, model=CastInputs(model, dtype)) if dtype is not None else bundle
    start = time.perf_counter()
    row: dict = {}
    with rng_preserved():
        try:
            if which[0]:
                row.update(validation_metrics(eval_bundle, plan.val_set, cfg, device, model.logit_scale.exp().item()))
            if which[1]:
                row.update(zeroshot_metrics(eval_bundle, cfg, device, out / "zeroshot"))
        finally:
            model.train()
    row["eval_seconds"] = round(time.perf_counter() - start, 2)
    return row


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


def train(cfg: TrainConfig, run_steps: int = 0) -> dict:
    """Train (or continue) per ``cfg``; ``run_steps`` > 0 stops this invocation after that many steps with a
    checkpoint, without changing the schedule (for time-limited cluster jobs and the resume test).
    Returns a summary dict (also written to OUTPUT/summary.json on rank 0).

    Cheap checks come first, in this order, so bad input fails before the model is built: the data (see
    ``check_training_data``), the eval sets, the output lock (rank 0), the --resume checkpoint and its settings.
    Then rank 0 writes the resolved settings to OUTPUT/config.yaml."""
    if under_torchrun():
        stop_with_parent()  # torchrun -9'd or its process group killed: SIGTERM here -> checkpoint, exit
    info = init_distributed(cfg.device)
    try:
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
            if info.is_main:  # rows after the resume step (or all, when starting afresh) are logged again
                trim_log(output / "log.jsonl", resume[1]["step"] if resume[1] else 0)
                write_config(cfg, output)
            plan = TrainPlan(urls, sizes, spe, total_steps, schedule, settings, evals)
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


def run_training(cfg: TrainConfig, info: DistInfo, output: Path, plan: TrainPlan,
                 resume: tuple[Path | None, dict | None, bool], run_steps: int) -> dict:
    """The model, the optimizer and the loop, once the inputs have passed ``train``'s checks."""
    seed_everything(cfg.seed + info.rank)
    check_precision(cfg.precision, info.device)
    bundle = create_clip(cfg.model, cfg.pretrained or None, device=info.device, precision=cfg.precision,
                         force_quick_gelu=cfg.force_quick_gelu, allow_torchscript=cfg.allow_torchscript)
    model = bundle.model
    if info.is_main:  # the model's name and activation travel with every checkpoint this run writes
        for folder in (output, output / "checkpoints"):
            write_identity(folder, bundle.name, model, bundle.quick_gelu)
    lock_towers(model, cfg)
    if cfg.grad_checkpointing:
        model.set_grad_checkpointing(True)
    pp = open_clip.get_model_preprocess_cfg(model)
    size = pp["size"] if isinstance(pp["size"], int) else pp["size"][0]
    spe, total_steps, settings = plan.spe, plan.total_steps, plan.settings
    dataset = ShardStream(plan.urls, plan.sizes, rank=info.rank, world=info.world_size, batch_size=cfg.batch_size,
                          seed=cfg.seed, transform=RSTrainTransform(size, pp["mean"], pp["std"], cfg.aug),
                          tokenizer=bundle.tokenizer, shuffle_buffer=cfg.shuffle_buffer, num_samples=cfg.train_num_samples,
                          max_bad_in_a_row=cfg.max_consecutive_bad_samples, resampled=cfg.dataset_resampled)

    optimizer = torch.optim.AdamW(param_groups(model, cfg.wd), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps)
    scaler = torch.amp.GradScaler("cuda") if cfg.precision == "amp" and info.device.type == "cuda" else None
    loss_fn = open_clip.ClipLoss(local_loss=cfg.local_loss, gather_with_grad=cfg.gather_with_grad, cache_labels=True,
                                 rank=info.rank, world_size=info.world_size)
    input_dtype = open_clip.get_input_dtype(cfg.precision)

    step, epoch, step_in_epoch, raw = 0, 0, 0, {}
    skipped: dict[int, dict] = {}
    resume_path, ckpt, data_kept = resume
    if ckpt is not None:
        model.load_state_dict(ckpt["state_dict"])
        try:
            optimizer.load_state_dict(ckpt["optimizer"])
        except ValueError as exc:  # --resume-force with other tower locks: other parameters in the optimizer
            raise ResumeError(f"--resume {resume_path}: its optimizer state does not fit this run's trainable "
                              f"parameters ({exc}): resume with the checkpoint's --lock-* settings") from None
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
            "world_size": info.world_size, "workers": cfg.workers, "model_name": bundle.name,
            "quick_gelu": bundle.quick_gelu, "config": to_dict(cfg),
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

    def backward(loss: torch.Tensor) -> None:
        (scaler.scale(loss) if scaler is not None else loss).backward()

    def autocast():
        return autocast_for(cfg.precision, info.device)

    run_log = RunLog(cfg, info, output, start_step=step, resuming=resume_path is not None)
    bar = tqdm(total=total_steps, initial=step, desc="train", unit="step", disable=not info.is_main, dynamic_ncols=True)
    global_batch = cfg.batch_size * info.world_size * cfg.accum_freq
    steps_this_run, last_saved, interrupted, last_eval = 0, step, False, None
    start_time, tick = time.perf_counter(), time.perf_counter()
    model.train()
    # the loader counts batches: a step takes accum_freq of them
    dataset.epoch, dataset.resume_step, dataset.resume_raw = epoch, step_in_epoch * cfg.accum_freq, dict(raw)
    batches = iter(make_loader(dataset, cfg.workers))
    try:
        with StopFlag(watch_parent=under_torchrun()) as stop:
            while step < total_steps:
                micro = step_batches(batches, epoch, cfg.accum_freq)
                lr = plan.schedule(step)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                optimizer.zero_grad(set_to_none=True)
                losses = accumulate_gradients(
                    train_model, loss_fn,
                    [(b["images"].to(info.device, dtype=input_dtype, non_blocking=True),
                      b["texts"].to(info.device, non_blocking=True)) for b in micro],
                    autocast, backward)
                # the step's one collective flag, after backward and before the weights change
                signalled, diverged = stop.any_rank(info, losses)
                if diverged:
                    raise TrainingDiverged(diverged_message(step + 1, losses, lr, last_good))
                if scaler is not None:
                    if cfg.grad_clip_norm:
                        scaler.unscale_(optimizer)
                        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip_norm)
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    if cfg.grad_clip_norm:
                        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip_norm)
                    optimizer.step()
                with torch.no_grad():
                    model.logit_scale.clamp_(0, math.log(100))
                step, step_in_epoch, steps_this_run = step + 1, step_in_epoch + 1, steps_this_run + 1
                for batch in micro:
                    raw[batch["role"]] = batch["raw_consumed"]
                    skipped[batch["role"]] = batch["skipped"]
                epoch_done = None
                if step_in_epoch == spe:  # epoch done: the next batch starts the next epoch's plan
                    epoch, step_in_epoch, raw = epoch + 1, 0, {}
                    epoch_done = epoch
                bar.update(1)
                if step % cfg.log_every_steps == 0 or step == total_steps:
                    now = time.perf_counter()
                    n = cfg.log_every_steps if step % cfg.log_every_steps == 0 else step % cfg.log_every_steps
                    row = {"step": step, "epoch": epoch, "loss": round(losses[-1].item(), 5), "lr": lr,
                           "logit_scale": round(model.logit_scale.exp().item(), 3),
                           "step_time_s": round((now - tick) / n, 4), "samples_per_s": round(global_batch * n / (now - tick), 1)}
                    tick = now
                    run_log.write(row)
                    bar.set_postfix(loss=f"{row['loss']:.3f}", lr=f"{lr:.2e}", sps=row["samples_per_s"])
                due = plan.evals.due(step, total_steps, epoch_done) if plan.evals else (False, False)
                if any(due) and signalled:
                    log.warning("stopping: the evaluation due at step %d is skipped", step)
                elif any(due):
                    last_eval = evaluate_now(bundle, cfg, due, plan.evals, info, output, step, epoch, run_log)
                    tick = time.perf_counter()  # the evaluation's time is no training step's
                want_stop = signalled or (run_steps and steps_this_run >= run_steps)
                epoch_save = epoch_done and cfg.save_every_epochs and epoch_done % cfg.save_every_epochs == 0
                if step % cfg.save_every_steps == 0 or epoch_save or want_stop or step >= total_steps:
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
    if last_eval is not None:
        summary["last_eval"] = last_eval
    if info.device.type == "cuda":
        summary["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(info.device) / 2**30, 3)
    if info.is_main and not interrupted:
        save_safetensors(model.state_dict(), output / "final.safetensors")
        summary["final"] = str(output / "final.safetensors")
        if cfg.eval.captions or cfg.eval.shards:
            summary["eval"] = evaluate_after_training(cfg, bundle, info, output / "eval", step)
    if info.is_main:
        curve = write_loss_curve(output)
        summary["loss_curve"] = str(curve) if curve else None
        (output / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def evaluate_now(bundle, cfg: TrainConfig, due: tuple[bool, bool], plan: EvalPlan, info: DistInfo, output: Path,
                 step: int, epoch: int, run_log: RunLog) -> dict | None:
    """The evaluations due after ``step``, on rank 0 (as open_clip_train) while the other ranks wait; the row
    (``"kind": "eval"``) goes to log.jsonl and wandb/TensorBoard at the step. Returns it (None off rank 0)."""
    row = None
    if info.is_main:
        metrics = evaluate_during_training(bundle, cfg, due, plan, info.device, output / "eval" / f"step_{step:08d}")
        row = {"step": step, "epoch": epoch, "kind": "eval", **metrics}
        run_log.write(row)
        log.info("eval at step %d: %s", step, ", ".join(f"{k} {v}" for k, v in metrics.items() if "R@" not in k))
    barrier(info)
    return row
