"""Stage-1 settings. Top-level names are open_clip_train's flags where the meaning is the same
(``--train-data``, ``--batch-size``, ``--lr``, ``--precision``...), so its users' commands carry over."""

from __future__ import annotations

from dataclasses import dataclass, field

from clip_pretrain.models import TORCHSCRIPT_HELP
from rs_common.config import ConfigError

# open_clip's meanings (open_clip.create_model / open_clip_train): amp* = fp32 weights under autocast (amp's GradScaler
# only on CUDA; on CPU amp is plain fp32); fp16/bf16 = weights in half precision except LayerNorms, no autocast, no
# GradScaler; pure_* = every weight in that dtype. Inputs are cast to the weights' dtype (open_clip.get_input_dtype).
PRECISIONS = ("amp", "amp_bf16", "amp_bfloat16", "fp32", "fp16", "bf16", "pure_fp16", "pure_bf16")
LR_SCHEDULERS = ("cosine", "const", "const-cooldown")  # open_clip_train's --lr-scheduler choices
REPORT_TARGETS = ("wandb", "tensorboard")
# adamw: torch.optim.AdamW, decoupled weight decay (open_clip_train's --opt default); adam: torch.optim.Adam, --wd is
# then an L2 term added to the gradient (RemoteCLIP's "Adam"). Both on the same two parameter groups.
OPTIMIZERS = ("adamw", "adam")


def report_targets(report_to: str) -> set[str]:
    """``--report-to`` as a set: open_clip_train's forms ``wandb``, ``tensorboard``, ``wandb,tensorboard``, ``all``;
    empty or ``none`` = neither. An unknown name is a ConfigError (a typo must not silently log nowhere)."""
    names = {n.strip() for n in report_to.split(",") if n.strip() and n.strip() != "none"}
    if "all" in names:
        names = (names - {"all"}) | set(REPORT_TARGETS)
    unknown = sorted(names - set(REPORT_TARGETS))
    if unknown:
        raise ConfigError(f"report_to: unknown target(s) {unknown}; use wandb, tensorboard, 'wandb,tensorboard' or all")
    return names


@dataclass
class AugConfig:
    crop_scale: list[float] = field(default_factory=lambda: [0.5, 1.0], metadata={"help": "RandomResizedCrop area range"})
    hflip: bool = field(default=True, metadata={"help": "random horizontal flip"})
    rotations: list[int] = field(
        default_factory=lambda: [0, 90, 180, 270], metadata={"help": "rotations drawn uniformly per sample (RemoteCLIP: 0/90/180/270)"}
    )

    def validate(self) -> None:
        lo_hi = self.crop_scale
        if len(lo_hi) != 2 or not 0 < lo_hi[0] <= lo_hi[1] <= 1:
            raise ConfigError(f"aug.crop_scale must be [low, high] within (0, 1], got {lo_hi}")
        if not self.rotations or any(r % 90 for r in self.rotations):
            raise ConfigError(f"aug.rotations must be multiples of 90, got {self.rotations}")


@dataclass
class EvalConfig:
    captions: str = field(default="", metadata={"help": "caption json (Karpathy) for retrieval eval after training"})
    images: str = field(default="", metadata={"help": "image folder of --eval.captions"})
    split: str = field(default="test", metadata={"help": "split of --eval.captions to evaluate ('all' = every entry)"})
    shards: str = field(default="", metadata={"help": "stage-0 shards to evaluate retrieval on instead of a caption json"})


@dataclass
class TrainConfig:
    train_data: str = field(default="", metadata={"help": "shards: brace pattern 'dir/shard-{000000..000009}.tar', '::'-joined list, or a shard dir"})
    train_num_samples: int = field(default=0, metadata={"help": "samples per epoch (0 = all, counted from sizes.json)"})
    dataset_resampled: bool = field(default=False, metadata={
        "help": "draw shards WITH replacement (open_clip_train's --dataset-resampled), per epoch and loader slot from "
                "the seed, so a mid-epoch resume stays exact; an epoch is still train_num_samples samples"})
    model: str = field(default="rs-tiny", metadata={"help": "open_clip model name (ViT-B-32, ViT-L-14, RN50, rs-tiny...)"})
    pretrained: str = field(default="", metadata={"help": "local checkpoint file to start from (open_clip .pt/.bin, OpenAI .pt, safetensors)"})
    allow_torchscript: bool = field(default=False, metadata={"help": TORCHSCRIPT_HELP})
    force_quick_gelu: bool = field(default=False, metadata={"help": "QuickGELU activations (OpenAI-trained weights; set automatically for OpenAI .pt)"})
    batch_size: int = field(default=64, metadata={"help": "batch size per GPU/process"})
    lr: float = field(default=5e-4, metadata={"help": "peak learning rate (RemoteCLIP: ViT-B-32 4e-5, ViT-L-14 1e-4, RN50 7e-5)"})
    opt: str = field(default="adamw", metadata={
        "help": f"optimizer, one of {OPTIMIZERS}: adamw = torch.optim.AdamW (decoupled weight decay, open_clip_train's "
                "default); adam = torch.optim.Adam (--wd is then L2 added to the gradient; RemoteCLIP's optimizer)",
        "metavar": "NAME"})
    wd: float = field(default=0.2, metadata={
        "help": "weight decay (decoupled with adamw, L2 with adam; never on biases, norms, gains or logit_scale)"})
    beta1: float = 0.9
    beta2: float = 0.98
    eps: float = 1e-6
    warmup: int = field(default=100, metadata={"help": "linear warm-up steps, then --lr-scheduler's schedule"})
    lr_scheduler: str = field(default="cosine", metadata={
        "help": f"one of {LR_SCHEDULERS}: cosine decay to 0, constant, or constant then a cooldown over the last "
                "--epochs-cooldown epochs (open_clip_train's formulas)", "metavar": "NAME"})
    epochs_cooldown: int = field(default=0, metadata={"help": "const-cooldown: epochs of cooldown at the end (required there)"})
    lr_cooldown_power: float = field(default=1.0, metadata={"help": "const-cooldown: power of the decay (1 = linear)"})
    lr_cooldown_end: float = field(default=0.0, metadata={"help": "const-cooldown: learning rate at the end"})
    accum_freq: int = field(default=1, metadata={
        "help": "gradient accumulation: one optimizer step per K loader batches, with the gradient of the K-times bigger "
                "batch (features of all K batches are the loss's negatives; open_clip_train's method)", "metavar": "K"})
    global_batch_size: int = field(default=0, metadata={
        "help": "check at the start: --batch-size x processes x --accum-freq must equal this (a paper's batch size; "
                "0 = no check)"})
    epochs: int = field(default=1, metadata={"help": "epochs (an epoch is train_num_samples samples)"})
    max_steps: int = field(default=0, metadata={"help": "stop after this many optimizer steps in total (0 = epochs decide)"})
    precision: str = field(default="amp", metadata={"help": f"one of {PRECISIONS}; amp is fp32 on CPU"})
    grad_checkpointing: bool = field(default=False, metadata={"help": "activation checkpointing (less memory, ~30% slower)"})
    lock_image: bool = field(default=False, metadata={"help": "freeze the image tower (LiT; open_clip's lock_image_tower)"})
    lock_image_unlocked_groups: int = field(default=0, metadata={"help": "--lock-image: leave the last N layer groups trainable"})
    lock_image_freeze_bn_stats: bool = field(default=False, metadata={
        "help": "--lock-image: also freeze BatchNorm statistics of the locked layers (ResNet towers)"})
    lock_text: bool = field(default=False, metadata={"help": "freeze the text tower (open_clip's lock_text_tower)"})
    lock_text_unlocked_layers: int = field(default=0, metadata={"help": "--lock-text: leave the last N layer groups trainable"})
    lock_text_freeze_layer_norm: bool = field(default=False, metadata={
        "help": "--lock-text: freeze the text tower's LayerNorms too (without it they stay trainable, as open_clip_train's "
                "flag meant)"})
    local_loss: bool = field(default=True, metadata={"help": "ClipLoss local_loss: logits of local vs all features (use with gather_with_grad)"})
    gather_with_grad: bool = field(default=True, metadata={"help": "ClipLoss all_gather with gradient (use with local_loss)"})
    grad_clip_norm: float = field(default=0.0, metadata={"help": "clip the gradient norm to this (0 = off)"})
    torch_compile: bool = field(default=False, metadata={"help": "torch.compile the model"})
    seed: int = 0
    workers: int = field(default=2, metadata={"help": "data loader worker processes per process"})
    shuffle_buffer: int = field(default=2000, metadata={"help": "sample shuffle buffer per worker"})
    max_consecutive_bad_samples: int = field(default=0, metadata={
        "help": "stop with an error after this many undecodable samples in a row in one loader slot "
                "(0 = max(1000, 10 x batch size)); a run of bad samples that long means broken shards, not a few bad files"})
    allow_unfinished_build: bool = field(default=False, metadata={
        "help": "train on shards whose build has not finished (no manifest.json beside them)"})
    resume: str = field(default="", metadata={"help": "'latest' (this --output's last checkpoint) or a checkpoint path"})
    resume_force: bool = field(default=False, metadata={
        "help": "resume even when the checkpoint was written with other data/batch/lr/schedule settings (warns and names them)"})
    output: str = field(default="runs/clip", metadata={"help": "run directory: checkpoints/, final.safetensors, log.jsonl, report"})
    save_every_steps: int = field(default=500, metadata={"help": "checkpoint every N steps (and always at the end / on SIGTERM)"})
    save_every_epochs: int = field(default=0, metadata={
        "help": "also checkpoint at the end of every N-th epoch (open_clip_train's --save-frequency; 0 = off)"})
    keep_checkpoints: int = field(default=3, metadata={"help": "step checkpoints kept (oldest deleted; 0 = keep all)"})
    log_every_steps: int = field(default=10, metadata={"help": "log.jsonl / wandb / progress-bar update interval"})
    report_to: str = field(default="", metadata={
        "help": "wandb, tensorboard, 'wandb,tensorboard' or all: Weights & Biases (offline unless WANDB_MODE says "
                "otherwise; a resumed run continues the same wandb run) and/or TensorBoard under OUTPUT/tensorboard"})
    wandb_project: str = "rs-clip"
    device: str = field(default="", metadata={"help": "cpu or cuda ('' = cuda when available)"})
    val_data: str = field(default="", metadata={
        "help": "stage-0 shards evaluated during training (rank 0): validation loss and retrieval recall@1/5/10"})
    val_num_samples: int = field(default=0, metadata={"help": "evaluate only the first N samples of --val-data (0 = all)"})
    val_frequency: int = field(default=1, metadata={"help": "evaluate --val-data every N epochs and at the end (0 = never)"})
    zeroshot_data: str = field(default="", metadata={
        "help": "class-folder set (<root>/<class>/<image>) for zero-shot top-1/top-5 during training", "metavar": "DIR"})
    zeroshot_frequency: int = field(default=2, metadata={"help": "zero-shot every N epochs and at the end (0 = never)"})
    eval_every_steps: int = field(default=0, metadata={
        "help": "also evaluate --val-data/--zeroshot-data every N optimizer steps (for small data sets whose epochs are "
                "few; 0 = by epoch only)"})
    aug: AugConfig = field(default_factory=AugConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def validate(self) -> None:
        """Every numeric setting in its meaningful range, so a bad value fails here and not as a ZeroDivisionError,
        a silent no-op or a deleted checkpoint later."""
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.precision == "amp_bfloat16":  # open_clip_train's other spelling of amp_bf16
            self.precision = "amp_bf16"
        if self.opt not in OPTIMIZERS:
            raise ConfigError(f"opt must be one of {OPTIMIZERS}, got {self.opt!r}" + (
                " (open_clip_train's timm optimizers are not available here)" if self.opt.startswith("timm/") else ""))
        if self.lr_scheduler not in LR_SCHEDULERS:
            raise ConfigError(f"lr_scheduler must be one of {LR_SCHEDULERS}, got {self.lr_scheduler!r}")
        if self.lr_scheduler == "const-cooldown" and self.epochs_cooldown < 1:
            raise ConfigError("lr_scheduler const-cooldown needs epochs_cooldown >= 1 (the epochs of cooldown at the end)")
        for name in ("batch_size", "epochs", "save_every_steps", "log_every_steps", "shuffle_buffer", "accum_freq"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("wd", "global_batch_size", "warmup", "max_steps", "train_num_samples", "workers", "keep_checkpoints",
                     "grad_clip_norm", "max_consecutive_bad_samples", "epochs_cooldown", "lr_cooldown_end", "lock_image_unlocked_groups",
                     "lock_text_unlocked_layers", "save_every_epochs", "val_num_samples", "val_frequency",
                     "zeroshot_frequency", "eval_every_steps"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("lr", "eps", "lr_cooldown_power"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("beta1", "beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.local_loss != self.gather_with_grad:
            raise ConfigError(
                "local_loss and gather_with_grad must be set together: each alone gives wrong gradients across processes"
            )
        if self.device not in ("", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ConfigError(f"device must be cpu or cuda, got {self.device!r}")
        report_targets(self.report_to)
        self.aug.validate()
