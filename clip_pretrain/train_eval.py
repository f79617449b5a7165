"""Evaluation during and after training (rank 0): ``--val-data`` (validation loss and retrieval recall), ``--zeroshot-data``
(zero-shot top-1/top-5) every N epochs / steps and at the end, and retrieval on ``--eval-*`` with the final weights,
through the stage-1 evaluators' own functions; the rows go to the run log. Evaluating never moves an RNG the training
loop reads, and leaves the model in training mode."""

from __future__ import annotations

import dataclasses
import logging
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F

from clip_pretrain.checkpoint import rng_state, set_rng_state
from clip_pretrain.config import TrainConfig
from clip_pretrain.distributed import DistInfo, barrier
from clip_pretrain.run_log import RunLog

log = logging.getLogger(__name__)


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
        from clip_pretrain.evaluate.eval_sets import load_shard_eval_set

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
    from clip_pretrain.evaluate.embedding import embed_eval_set
    from clip_pretrain.evaluate.recall import recall_at_k

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
