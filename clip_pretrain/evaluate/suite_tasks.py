"""The suite's tasks on one dataset each: features from the run's :class:`FeatureCache` (every image embedded once),
texts embedded here (prompts and captions are cheap), the metric from its own module (``probes``, ``zeroshot``,
``recall``, ``counting``). Each ``run_*`` returns ``{task: metrics}`` for the tasks asked of the dataset."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from clip_pretrain.evaluate import counting, probes
from clip_pretrain.evaluate.class_splits import ClassSplit
from clip_pretrain.evaluate.common import EvalError
from clip_pretrain.evaluate.embedding import encode_images, encode_texts
from clip_pretrain.evaluate.eval_sets import check_images_present, load_karpathy_eval_set
from clip_pretrain.evaluate.feature_cache import FeatureCache
from clip_pretrain.evaluate.recall import recall_at_k
from clip_pretrain.evaluate.suite_file import SuiteEntry
from clip_pretrain.evaluate.zeroshot import accuracy_metrics, class_text_embeddings, normalise_class_name


@dataclass
class TaskContext:
    """What every task needs: the model, where it runs, the run's feature cache and the suite's settings."""

    bundle: Any
    device: Any
    cache: FeatureCache
    settings: Any  # SuiteConfig
    skipped: Any = None  # Counter of the dataset's undecodable images, filled by embed()

    def embed(self, name: str, paths: list[Path]) -> None:
        """Embed (or take from the cache) every image of a dataset once, counting the ones that do not decode."""
        s = self.settings
        _, _, self.skipped = self.cache.features(paths, lambda todo: encode_images(
            self.bundle.model, self.bundle.preprocess_val, todo, self.device, s.batch_size, s.workers, progress=name))

    def features(self, paths: list[Path], labels: np.ndarray | None = None):
        """(features, labels or kept indices) of the images that decoded."""
        feats, kept = self.cache.lookup(paths)
        return feats, (labels[kept] if labels is not None else kept)

    def texts(self, texts: list[str]) -> np.ndarray:
        return encode_texts(self.bundle.model, self.bundle.tokenizer, texts, self.device)


def need(feats: np.ndarray, what: str, name: str) -> None:
    if len(feats) == 0:
        raise EvalError(f"{name}: no image of the {what} split could be read")


def run_classification(ctx: TaskContext, entry: SuiteEntry, split: ClassSplit) -> dict[str, dict]:
    """zeroshot / linear_probe / knn / few_shot on a class-folder dataset's train/test split."""
    s, out = ctx.settings, {}
    zs_all = s.zeroshot_split == "all" and "zeroshot" in entry.tasks
    ctx.embed(entry.name, split.train + split.test if (set(entry.tasks) - {"zeroshot"} or zs_all) else split.test)
    test_x, test_y = ctx.features(split.test, split.test_labels)
    need(test_x, "test", entry.name)
    counts = {"n_skipped_images": int(sum(ctx.skipped.values())), "skipped": dict(ctx.skipped)}
    if "zeroshot" in entry.tasks:
        x, y = (test_x, test_y)
        if zs_all:
            x, y = ctx.features(split.train + split.test, np.concatenate([split.train_labels, split.test_labels]))
        prompts = [entry.class_names.get(c, normalise_class_name(c)) for c in split.classes]
        acc = accuracy_metrics(x @ class_text_embeddings(ctx.bundle.model, ctx.bundle.tokenizer, prompts, s.templates,
                                                         ctx.device).T, y, split.classes)
        out["zeroshot"] = {"top1": acc["top1"], "top5": acc["top5"], "top5_k": acc["top5_k"],
                           "mean_per_class": acc["mean_per_class"], "n_images": int(len(y)), "split": s.zeroshot_split,
                           "n_classes": len(split.classes), "templates": list(s.templates), **counts}
    if set(entry.tasks) & {"linear_probe", "knn", "few_shot"}:
        train_x, train_y = ctx.features(split.train, split.train_labels)
        need(train_x, "train", entry.name)
        if "linear_probe" in entry.tasks:
            out["linear_probe"] = {**probes.linear_probe(train_x, train_y, test_x, test_y, s.probe_c_grid), **counts}
        if "knn" in entry.tasks:
            out["knn"] = {**probes.knn_classify(train_x, train_y, test_x, test_y, s.knn_k), **counts}
        if "few_shot" in entry.tasks:
            out["few_shot"] = probes.few_shot(train_x, train_y, test_x, test_y, s.shots, s.few_shot_seeds, s.few_shot_c)
    return out


def run_retrieval(ctx: TaskContext, entry: SuiteEntry) -> dict[str, dict]:
    """Image-text recall@k on a Karpathy caption set's split (the stage-1 metric, clip_benchmark's tie rule)."""
    eval_set = load_karpathy_eval_set(entry.path, entry.images, entry.split)
    check_images_present(eval_set)
    paths = [item.path for item in eval_set.items]
    ctx.embed(entry.name, paths)
    image_emb, kept = ctx.features(paths)
    need(image_emb, entry.split, entry.name)
    items = [eval_set.items[i] for i in kept.tolist()]
    texts = [c for item in items for c in item.captions]
    text_to_image = np.asarray([i for i, item in enumerate(items) for _ in item.captions], dtype=np.int64)
    metrics = recall_at_k(image_emb, ctx.texts(texts), text_to_image, use_gpu=None if ctx.device.type == "cuda" else False)
    metrics.update({"split": entry.split, "n_skipped_images": int(sum(ctx.skipped.values())),
                    "skipped": dict(ctx.skipped), "skipped_when_listing": dict(eval_set.skipped)})
    return {"retrieval": metrics}


def run_counting(ctx: TaskContext, entry: SuiteEntry) -> dict[str, dict]:
    """Zero-shot counting on a DOTA folder's images with 1..N objects of one class."""
    s = ctx.settings
    listed = counting.list_counting_images(entry.path, s.counting_max)
    if not listed.images:
        raise EvalError(f"{entry.path}: no image with 1-{s.counting_max} objects of one class "
                        f"(left out: {dict(listed.left_out)})")
    ctx.embed(entry.name, listed.images)
    feats, kept = ctx.features(listed.images)
    need(feats, "counting", entry.name)
    classes = [listed.classes[i] for i in kept.tolist()]
    prompt_emb = {c: ctx.texts(counting.count_prompts(entry.class_names.get(c, c), s.counting_template, s.counting_max))
                  for c in sorted(set(classes))}
    metrics = counting.score_counting(feats, classes, listed.counts[kept], prompt_emb)
    metrics.update({"left_out": dict(listed.left_out), "n_listed": listed.n_listed,
                    "n_skipped_images": int(sum(ctx.skipped.values())), "skipped": dict(ctx.skipped),
                    "template": s.counting_template})
    return {"counting": metrics}
