"""Stage-1 settings. Top-level names are open_clip_train's flags where the meaning is the same
(``--train-data``, ``--batch-size``, ``--lr``, ``--precision``...), so its users' commands carry over."""

from __future__ import annotations

from dataclasses import dataclass, field

from clip_pretrain.models import TORCHSCRIPT_HELP
from shards.config import ConfigError

PRECISIONS = ("amp", "amp_bf16", "fp32", "bf16", "pure_bf16")


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
    model: str = field(default="rs-tiny", metadata={"help": "open_clip model name (ViT-B-32, ViT-L-14, RN50, rs-tiny...)"})
    pretrained: str = field(default="", metadata={"help": "local checkpoint file to start from (open_clip .pt/.bin, OpenAI .pt, safetensors)"})
    allow_torchscript: bool = field(default=False, metadata={"help": TORCHSCRIPT_HELP})
    force_quick_gelu: bool = field(default=False, metadata={"help": "QuickGELU activations (OpenAI-trained weights; set automatically for OpenAI .pt)"})
    batch_size: int = field(default=64, metadata={"help": "batch size per GPU/process"})
    lr: float = field(default=5e-4, metadata={"help": "peak learning rate (RemoteCLIP: ViT-B-32 4e-5, ViT-L-14 1e-4, RN50 7e-5)"})
    wd: float = field(default=0.2, metadata={"help": "AdamW weight decay (not on biases, norms, embeddings' gains or logit_scale)"})
    beta1: float = 0.9
    beta2: float = 0.98
    eps: float = 1e-6
    warmup: int = field(default=100, metadata={"help": "linear warm-up steps, then cosine decay to 0"})
    epochs: int = field(default=1, metadata={"help": "epochs (an epoch is train_num_samples samples)"})
    max_steps: int = field(default=0, metadata={"help": "stop after this many optimizer steps in total (0 = epochs decide)"})
    precision: str = field(default="amp", metadata={"help": f"one of {PRECISIONS}; amp is fp32 on CPU"})
    grad_checkpointing: bool = field(default=False, metadata={"help": "activation checkpointing (less memory, ~30% slower)"})
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
    keep_checkpoints: int = field(default=3, metadata={"help": "step checkpoints kept (oldest deleted; 0 = keep all)"})
    log_every_steps: int = field(default=10, metadata={"help": "log.jsonl / wandb / progress-bar update interval"})
    report_to: str = field(default="", metadata={"help": "'wandb' to log to Weights & Biases (offline unless WANDB_MODE says otherwise)"})
    wandb_project: str = "rs-clip"
    device: str = field(default="", metadata={"help": "cpu or cuda ('' = cuda when available)"})
    aug: AugConfig = field(default_factory=AugConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def validate(self) -> None:
        """Every numeric setting in its meaningful range, so a bad value fails here and not as a ZeroDivisionError,
        a silent no-op or a deleted checkpoint later."""
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        for name in ("batch_size", "epochs", "save_every_steps", "log_every_steps", "shuffle_buffer"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("wd", "warmup", "max_steps", "train_num_samples", "workers", "keep_checkpoints", "grad_clip_norm",
                     "max_consecutive_bad_samples"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("lr", "eps"):
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
        if self.report_to not in ("", "wandb", "none"):
            raise ConfigError(f"report_to must be 'wandb' or empty, got {self.report_to!r}")
        self.aug.validate()
