"""Image-text retrieval evaluation, the driver: load the eval set and the model, embed, score recall@k, write
``metrics.json`` (+ embeddings, ``report.html``).

The pieces: :mod:`clip_pretrain.evaluate.recall` (the metric and its tie rule), :mod:`~clip_pretrain.evaluate.eval_sets`
(Karpathy json or stage-0 shards), :mod:`~clip_pretrain.evaluate.embedding` (encode images/texts),
:mod:`~clip_pretrain.evaluate.retrieval_report` (the HTML report). Command line: ``launch/eval_retrieval.py``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from clip_pretrain.evaluate.common import MODEL_HELP, EvalError, check_model_inputs, check_output_dir, load_bundle
from clip_pretrain.evaluate.embedding import embed_eval_set, resolve_device
from clip_pretrain.evaluate.eval_sets import EvalSet, check_images_present, load_karpathy_eval_set, load_shard_eval_set
from clip_pretrain.evaluate.recall import DEFAULT_KS, recall_at_k
from clip_pretrain.evaluate.retrieval_report import write_report
from clip_pretrain.models import TORCHSCRIPT_HELP
from rs_common.config import ConfigError, to_dict
from rs_common.files import atomic_write_json

log = logging.getLogger(__name__)


@dataclass
class RetrievalEvalConfig:
    model: str = field(default="", metadata={"help": MODEL_HELP})
    checkpoint: str | None = field(default=None, metadata={"help": "weights file create_clip reads; none = random init"})
    captions: str | None = field(default=None, metadata={"help": "Karpathy caption json (or a folder with dataset*.json)"})
    images: str | None = field(default=None, metadata={"help": "image folder of the caption json (default: images/ beside it)"})
    split: str = field(default="test", metadata={"help": "split of the caption json: test, val, a comma list, or all"})
    shards: str | None = field(default=None, metadata={"help": "stage-0 shards instead: folder, tar glob or brace pattern"})
    output: str = field(default="eval_retrieval", metadata={"help": "output folder"})
    save_embeddings: bool = field(default=False, metadata={"help": "also write image_emb.npy, text_emb.npy, text_to_image.json"})
    batch_size: int = field(default=64, metadata={"help": "images/texts per forward pass"})
    search_batch_size: int = field(default=16384, metadata={"help": "queries per faiss search call"})
    device: str = field(default="auto", metadata={"help": "cpu, cuda, cuda:N or auto"})
    workers: int = field(default=4, metadata={"help": "image decoding worker processes (0 = in the main process)"})
    ks: list[int] = field(default_factory=lambda: list(DEFAULT_KS), metadata={"help": "recall cut-offs"})
    report_queries: int = field(default=10, metadata={"help": "queries per direction shown in report.html (0 = no report)"})
    allow_torchscript: bool = field(default=False, metadata={"help": TORCHSCRIPT_HELP})

    def validate(self) -> None:
        if self.checkpoint is not None and self.checkpoint.strip().lower() in ("", "none", "random"):
            self.checkpoint = None
        if not self.model and self.checkpoint is None:
            raise ConfigError("model is required without a checkpoint (e.g. --model ViT-B-32 for a random init)")
        if self.shards and (self.captions or self.images):
            raise ConfigError("give either shards or captions (+ images), not both")
        if not self.shards and not self.captions:
            raise ConfigError("an eval set is required: captions (Karpathy json, with images) or shards")
        for name in ("batch_size", "search_batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.workers < 0:
            raise ConfigError(f"workers must be >= 0, got {self.workers}")
        if not self.ks or min(self.ks) < 1:
            raise ConfigError(f"ks must be positive integers, got {self.ks}")
        if self.report_queries < 0:
            raise ConfigError(f"report_queries must be >= 0 (0 = no report), got {self.report_queries}")


def load_eval_set(cfg: RetrievalEvalConfig) -> EvalSet:
    if cfg.shards:
        return load_shard_eval_set(cfg.shards)
    return load_karpathy_eval_set(cfg.captions, cfg.images, cfg.split)


def model_source(cfg: RetrievalEvalConfig, bundle=None, source: str | None = None) -> str:
    """What weights an evaluation scores, in words: ``source`` when the caller says; for a model passed in
    memory its ``source`` attribute, else the checkpoint the config names, else "in-memory model"; otherwise
    the checkpoint path, or "random init (seed 0)"."""
    if source:
        return str(source)
    if bundle is not None:
        told = getattr(bundle, "source", None) or getattr(bundle.model, "source", None)
        if told:
            return str(told)
        name = getattr(bundle, "name", None) or cfg.model
        if cfg.checkpoint:
            return f"in-memory {name} model (from {cfg.checkpoint})"
        return f"in-memory {name} model passed by the caller (no checkpoint file named)"
    if cfg.checkpoint:
        return str(Path(cfg.checkpoint).expanduser())
    return "random init (seed 0)"


def evaluate_retrieval(cfg: RetrievalEvalConfig, bundle=None, source: str | None = None) -> dict[str, Any]:
    """Embed the eval set, compute recall@k, write ``OUTPUT/metrics.json`` (+ embeddings, ``report.html``).

    ``bundle``: a ClipBundle already in memory (e.g. during training); otherwise ``cfg.model`` is built
    with ``cfg.checkpoint`` (None = random init, useful for a chance baseline). ``source``: what the in-memory
    model is (e.g. "training run OUT, step 5000"), recorded as ``metrics["model_source"]`` and named in the
    report's header (default: ``model_source``). Returns the metrics dict.
    """
    cfg.validate()
    t0 = time.perf_counter()
    device = resolve_device(cfg.device)
    out = check_output_dir(cfg.output)
    bundle_in = bundle
    model_name = getattr(bundle, "name", None) or cfg.model
    if bundle is None:
        model_name = check_model_inputs(cfg.model, cfg.checkpoint)
    eval_set = load_eval_set(cfg)
    check_images_present(eval_set)
    out.mkdir(parents=True, exist_ok=True)
    if bundle is None:
        bundle = load_bundle(model_name, cfg.checkpoint, device, allow_torchscript=cfg.allow_torchscript)
    log.info("retrieval eval: %d images listed from %s", len(eval_set.items), eval_set.source)
    t1 = time.perf_counter()
    image_emb, text_emb, text_to_image, items, skipped = embed_eval_set(bundle, eval_set, device, cfg.batch_size, cfg.workers)
    if len(items) == 0:
        raise EvalError(f"{eval_set.source}: none of the {len(eval_set.items)} images could be read ({dict(skipped)})")
    t2 = time.perf_counter()
    metrics = recall_at_k(image_emb, text_emb, text_to_image, cfg.ks, cfg.search_batch_size,
                          use_gpu=None if device.type == "cuda" else False)
    t3 = time.perf_counter()
    metrics.update({
        "n_skipped_images": int(sum(skipped.values())),
        "skipped": dict(skipped),
        "eval_set": eval_set.describe(),
        "model": model_name,
        "quick_gelu": bool(getattr(bundle, "quick_gelu", False)),
        "checkpoint": cfg.checkpoint,
        "model_source": model_source(cfg, bundle_in, source),
        "device": str(device),
        "seconds": {"load": round(t1 - t0, 3), "embed": round(t2 - t1, 3), "search": round(t3 - t2, 3)},
        "config": to_dict(cfg),
    })
    atomic_write_json(out / "metrics.json", metrics)
    if cfg.save_embeddings:
        np.save(out / "image_emb.npy", image_emb)
        np.save(out / "text_emb.npy", text_emb)
        atomic_write_json(out / "text_to_image.json", text_to_image.tolist())
        atomic_write_json(out / "image_keys.json", [it.key for it in items])
        atomic_write_json(out / "texts.json", [c for it in items for c in it.captions])
    if cfg.report_queries > 0:
        write_report(out / "report.html", metrics, image_emb, text_emb, text_to_image, items, cfg.report_queries)
    log.info("retrieval: mean recall %.2f (%d images, %d texts) -> %s", metrics["mean_recall"],
             metrics["n_images"], metrics["n_texts"], out / "metrics.json")
    return metrics
