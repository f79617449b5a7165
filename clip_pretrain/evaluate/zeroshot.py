"""Zero-shot scene classification on ``<class>/<image>`` folders (AID, RESISC45, EuroSAT, UCM, ...).

One text embedding per class from prompt templates (default RemoteCLIP's single "a satellite photo of {}.";
with several templates, the normalised embeddings of all of them are averaged and renormalised: CLIP's
prompt ensembling). Class names come from the folder names, normalised for prompts (``BareLand`` ->
"bare land", ``storage_tank`` / ``storage-tank`` -> "storage tank"); ``class_names`` overrides any of them.
Images are scored against all classes; top-1 and top-5 (top min(5, n_classes)) accuracy in percent over
all images, per-class top-1 accuracy, a confusion matrix (PNG + CSV) and per-image predictions.
Images that do not decode are skipped and counted by reason in ``metrics.json``.
"""

from __future__ import annotations

import csv
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from clip_pretrain.evaluate.common import MODEL_HELP, EvalError, check_model_inputs, check_output_dir, load_bundle
from clip_pretrain.evaluate.embedding import encode_images, encode_texts, resolve_device
from clip_pretrain.models import TORCHSCRIPT_HELP
from rs_common.config import ConfigError, to_dict
from rs_common.files import atomic_write_json, list_images

log = logging.getLogger(__name__)

DEFAULT_TEMPLATES = ["a satellite photo of {}."]  # RemoteCLIP's zero-shot prompt


def normalise_class_name(name: str) -> str:
    """Folder name -> prompt text: ``BareLand`` -> "bare land", ``storage_tank``/``storage-tank`` ->
    "storage tank", ``RSLabel`` -> "rs label"; whitespace collapsed, lower case."""
    s = re.sub(r"[_\-]+", " ", name)
    s = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", s)
    s = re.sub(r"(?<=[A-Z])(?=[A-Z][a-z])", " ", s)
    return " ".join(s.split()).lower()


@dataclass
class ClassFolders:
    classes: list[str]  # folder names, sorted
    images: list[Path]
    labels: np.ndarray
    empty: list[str]


def list_class_folders(root: str | Path) -> ClassFolders:
    """Every non-hidden sub-folder of ``root`` holding images (searched recursively) is a class, sorted by name."""
    root = Path(root).expanduser()
    if root.is_file():
        raise EvalError(f"{root}: a file, not a class-folder root (expected a folder <root>/<class>/<image>)")
    if not root.is_dir():
        raise EvalError(f"{root}: class-folder root not found (expected <root>/<class>/<image>)")
    classes, images, labels, empty = [], [], [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = list_images(folder)
        if not files:
            empty.append(folder.name)
            continue
        labels.extend([len(classes)] * len(files))
        classes.append(folder.name)
        images.extend(files)
    if len(classes) < 2:
        raise EvalError(f"{root}: zero-shot needs at least 2 class folders with images, found {len(classes)} "
                        f"({classes or 'none'}; empty folders: {empty or 'none'})")
    return ClassFolders(classes, images, np.asarray(labels, dtype=np.int64), empty)


def class_text_embeddings(model, tokenizer, prompts: list[str], templates: list[str], device, batch_size: int = 256) -> np.ndarray:
    """(n_classes, d): per class the mean of its normalised template embeddings, renormalised."""
    texts = [t.format(p) for p in prompts for t in templates]
    emb = encode_texts(model, tokenizer, texts, device, batch_size).reshape(len(prompts), len(templates), -1)
    mean = emb.mean(axis=1)
    return mean / np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)


def accuracy_metrics(scores: np.ndarray, labels: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """top1/top5 (percent; top5 = top min(5, n_classes)), per-class top-1, mean per-class, confusion counts.
    Ties between classes go to the lower class index."""
    n_classes = len(classes)
    k5 = min(5, n_classes)
    order = np.argsort(-scores, axis=1, kind="stable")
    pred = order[:, 0]
    top5_hit = (order[:, :k5] == labels[:, None]).any(axis=1)
    confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(confusion, (labels, pred), 1)
    support = confusion.sum(axis=1)
    per_class = {c: (float(100.0 * confusion[i, i] / support[i]) if support[i] else None) for i, c in enumerate(classes)}
    valid = [v for v in per_class.values() if v is not None]
    return {
        "top1": float(100.0 * np.mean(pred == labels)) if len(labels) else 0.0,
        "top5": float(100.0 * np.mean(top5_hit)) if len(labels) else 0.0,
        "top5_k": k5,
        "mean_per_class": float(np.mean(valid)) if valid else 0.0,
        "per_class": per_class,
        "per_class_counts": {c: int(support[i]) for i, c in enumerate(classes)},
        "_confusion": confusion,
        "_pred": pred,
    }


def plot_confusion(confusion: np.ndarray, names: list[str], path: Path, title: str = "") -> None:
    """Row-normalised confusion matrix (true rows, predicted columns) as a PNG; Agg canvas, no pyplot state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = len(names)
    rows = confusion.sum(axis=1, keepdims=True)
    norm = np.divide(confusion, np.maximum(rows, 1), dtype=np.float64)
    side = max(5.0, min(0.32 * n + 3.0, 40.0))
    fig = Figure(figsize=(side, side * 0.92))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    if n <= 120:
        ax.set_xticks(range(n))
        ax.set_yticks(range(n))
        ax.set_xticklabels(names, rotation=90, fontsize=7)
        ax.set_yticklabels(names, fontsize=7)
    if n <= 40:
        for i in range(n):
            for j in range(n):
                if confusion[i, j]:
                    ax.text(j, i, str(confusion[i, j]), ha="center", va="center", fontsize=6,
                            color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


@dataclass
class ZeroShotConfig:
    model: str = field(default="", metadata={"help": MODEL_HELP})
    checkpoint: str | None = field(default=None, metadata={"help": "weights file create_clip reads; none = random init"})
    data: str = field(default="", metadata={"help": "class-folder root: <root>/<class>/<image>"})
    output: str = field(default="eval_zeroshot", metadata={"help": "output folder"})
    templates: list[str] = field(default_factory=lambda: list(DEFAULT_TEMPLATES),
                                 metadata={"help": "prompt templates with {} for the class name; several are ensembled"})
    class_names: dict = field(default_factory=dict, metadata={"help": "folder name -> prompt class name overrides"})
    batch_size: int = field(default=64, metadata={"help": "images per forward pass"})
    device: str = field(default="auto", metadata={"help": "cpu, cuda, cuda:N or auto"})
    workers: int = field(default=4, metadata={"help": "image decoding worker processes (0 = in the main process)"})
    allow_torchscript: bool = field(default=False, metadata={"help": TORCHSCRIPT_HELP})

    def validate(self) -> None:
        if not self.data:
            raise ConfigError("data (the class-folder root) is required")
        if self.checkpoint is not None and self.checkpoint.strip().lower() in ("", "none", "random"):
            self.checkpoint = None
        if not self.model and self.checkpoint is None:
            raise ConfigError("model is required without a checkpoint (e.g. --model ViT-B-32 for a random init)")
        if not self.templates:
            raise ConfigError("templates must hold at least one template")
        for t in self.templates:
            if "{}" not in t:
                raise ConfigError(f"template {t!r} has no '{{}}' for the class name")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.workers < 0:
            raise ConfigError(f"workers must be >= 0, got {self.workers}")


def evaluate_zeroshot(cfg: ZeroShotConfig, bundle=None) -> dict[str, Any]:
    """Classify every image of ``cfg.data``; writes ``metrics.json``, ``confusion_matrix.png``/``.csv`` and
    ``predictions.csv`` into ``cfg.output`` and returns the metrics."""
    cfg.validate()
    t0 = time.perf_counter()
    device = resolve_device(cfg.device)
    out = check_output_dir(cfg.output)
    model_name = getattr(bundle, "name", None) or cfg.model
    if bundle is None:
        model_name = check_model_inputs(cfg.model, cfg.checkpoint)
    folders = list_class_folders(cfg.data)
    unknown = sorted(set(cfg.class_names) - set(folders.classes))
    if unknown:
        raise EvalError(f"class_names overrides unknown class folders {unknown} (classes: {folders.classes})")
    prompts = [str(cfg.class_names.get(c, normalise_class_name(c))) for c in folders.classes]
    out.mkdir(parents=True, exist_ok=True)
    if bundle is None:
        bundle = load_bundle(model_name, cfg.checkpoint, device, allow_torchscript=cfg.allow_torchscript)
    t1 = time.perf_counter()
    class_emb = class_text_embeddings(bundle.model, bundle.tokenizer, prompts, cfg.templates, device)
    image_emb, kept, skipped = encode_images(bundle.model, bundle.preprocess_val, folders.images, device,
                                             cfg.batch_size, cfg.workers)
    if len(kept) == 0:
        raise EvalError(f"{cfg.data}: none of the {len(folders.images)} images could be read ({dict(skipped)})")
    t2 = time.perf_counter()
    labels = folders.labels[kept]
    scores = image_emb @ class_emb.T
    acc = accuracy_metrics(scores, labels, folders.classes)
    confusion, pred = acc.pop("_confusion"), acc.pop("_pred")
    metrics: dict[str, Any] = {
        **acc,
        "n_images": int(len(kept)),
        "n_classes": len(folders.classes),
        "n_skipped_images": int(sum(skipped.values())),
        "skipped": dict(skipped),
        "empty_class_folders": folders.empty,
        "class_prompts": dict(zip(folders.classes, prompts)),
        "templates": list(cfg.templates),
        "chance_top1": 100.0 / len(folders.classes),
        "data": str(cfg.data),
        "model": model_name,
        "quick_gelu": bool(getattr(bundle, "quick_gelu", False)),
        "checkpoint": cfg.checkpoint,
        "device": str(device),
        "seconds": {"load": round(t1 - t0, 3), "embed": round(t2 - t1, 3)},
        "config": to_dict(cfg),
    }
    atomic_write_json(out / "metrics.json", metrics)
    with open(out / "confusion_matrix.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["true \\ predicted", *folders.classes])
        for name, row in zip(folders.classes, confusion.tolist()):
            writer.writerow([name, *row])
    with open(out / "predictions.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "true", "predicted", "score"])
        for r, idx in enumerate(kept.tolist()):
            writer.writerow([str(folders.images[idx]), folders.classes[labels[r]], folders.classes[pred[r]],
                             f"{scores[r, pred[r]]:.5f}"])
    plot_confusion(confusion, folders.classes, out / "confusion_matrix.png",
                   f"{model_name} ({Path(cfg.checkpoint).name if cfg.checkpoint else 'random init'}) on "
                   f"{Path(cfg.data).name}: top-1 {metrics['top1']:.2f}%")
    log.info("zero-shot: top-1 %.2f%% top-%d %.2f%% on %d images, %d classes -> %s", metrics["top1"], acc["top5_k"],
             metrics["top5"], metrics["n_images"], metrics["n_classes"], out / "metrics.json")
    return metrics
