"""RemoteCLIP's evaluation suite, the driver: every task of a suite file (see :mod:`~clip_pretrain.evaluate.suite_file`)
on one checkpoint, each image embedded once (:mod:`~clip_pretrain.evaluate.feature_cache`), one table out.

Writes into the output folder: ``suite.json`` (task -> dataset -> metrics), ``suite_meta.json`` (model, checkpoint,
per-dataset status, settings, timings), ``suite.md`` and ``suite.html`` (the table, the paper's numbers beside ours)
and ``splits/<dataset>.json`` (the train/test lists of every class-folder dataset, for other tools to reuse).
Command line: ``launch/eval_suite.py``.
"""

from __future__ import annotations

import logging
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from clip_pretrain.evaluate.class_splits import load_class_split, write_split_lists
from clip_pretrain.evaluate.common import MODEL_HELP, EvalError, check_model_inputs, check_output_dir, load_bundle
from clip_pretrain.evaluate.embedding import resolve_device
from clip_pretrain.evaluate.feature_cache import FeatureCache, model_key
from clip_pretrain.evaluate.probes import DEFAULT_C_GRID
from clip_pretrain.evaluate.suite_file import TASKS, SuiteEntry, load_suite
from clip_pretrain.evaluate.suite_report import write_suite_report
from clip_pretrain.evaluate.suite_tasks import TaskContext, run_classification, run_counting, run_retrieval
from clip_pretrain.evaluate.zeroshot import DEFAULT_TEMPLATES
from clip_pretrain.models import TORCHSCRIPT_HELP
from rs_common.config import ConfigError, to_dict
from rs_common.errors import first_line
from rs_common.files import atomic_write_json

log = logging.getLogger(__name__)


@dataclass
class SuiteConfig:
    checkpoint: str = field(default="", metadata={
        "help": "weights to evaluate (a file or a run folder; 'random' = a random init of --model, a chance baseline)"})
    suite: str = field(default="", metadata={
        "help": "suite YAML (a list of {name, tasks, path}) or the name of a shipped suite (remoteclip)"})
    model: str = field(default="", metadata={"help": MODEL_HELP})
    output: str = field(default="eval_suite", metadata={"help": "output folder"})
    data_root: str = field(default="", metadata={"help": "folder the suite's relative paths start from (default: here)"})
    cache: str = field(default="", metadata={
        "help": "feature cache folder: image features kept per checkpoint and image, reused by later runs ('' = this run only)"})
    templates: list[str] = field(default_factory=lambda: list(DEFAULT_TEMPLATES),
                                 metadata={"help": "zero-shot prompt templates with {} for the class name (ensembled)"})
    zeroshot_split: str = field(default="test", metadata={
        "help": "images zero-shot scores: test (the same images as the probes) or all"})
    train_fraction: float = field(default=0.8, metadata={
        "help": "share of each class that is train when a class-folder tree is split by sorted name (RemoteCLIP: 0.8)"})
    probe_c_grid: list[float] = field(default_factory=lambda: list(DEFAULT_C_GRID), metadata={
        "help": "linear probe: inverse regularisation values tried on the validation split"})
    knn_k: int = field(default=20, metadata={"help": "k of the k-NN classifier"})
    shots: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16], metadata={"help": "few-shot images per class"})
    few_shot_seeds: int = field(default=5, metadata={"help": "few-shot draws per shot count (mean and spread reported)"})
    few_shot_c: float = field(default=1.0, metadata={"help": "few-shot probe's inverse regularisation (fixed: 1 shot has no validation)"})
    counting_template: str = field(default="a satellite photo of {n} {c}s.", metadata={
        "help": "counting prompt: {n} the count, {c} the class name"})
    counting_max: int = field(default=10, metadata={"help": "counting: prompts 1..N; images with more objects are left out"})
    batch_size: int = field(default=64, metadata={"help": "images per forward pass"})
    device: str = field(default="auto", metadata={"help": "cpu, cuda, cuda:N or auto"})
    workers: int = field(default=4, metadata={"help": "image decoding worker processes (0 = in the main process)"})
    allow_torchscript: bool = field(default=False, metadata={"help": TORCHSCRIPT_HELP})

    def validate(self) -> None:
        if not self.suite:
            raise ConfigError("suite is required (a suite YAML file, or a shipped suite's name such as remoteclip)")
        if self.checkpoint.strip().lower() in ("", "none", "random"):
            if not self.model:
                raise ConfigError("checkpoint is required (or --checkpoint random with --model for a chance baseline)")
            self.checkpoint = ""
        if self.zeroshot_split not in ("test", "all"):
            raise ConfigError(f"zeroshot_split must be test or all, got {self.zeroshot_split!r}")
        if not 0 < self.train_fraction < 1:
            raise ConfigError(f"train_fraction must be in (0, 1), got {self.train_fraction}")
        if not self.templates or any("{}" not in t for t in self.templates):
            raise ConfigError(f"templates must each hold '{{}}' for the class name, got {self.templates}")
        if "{n}" not in self.counting_template or "{c}" not in self.counting_template:
            raise ConfigError(f"counting_template must hold {{n}} and {{c}}, got {self.counting_template!r}")
        if not self.probe_c_grid or min(self.probe_c_grid) <= 0 or self.few_shot_c <= 0:
            raise ConfigError("probe_c_grid values and few_shot_c must be > 0")
        if not self.shots or min(self.shots) < 1:
            raise ConfigError(f"shots must be positive integers, got {self.shots}")
        for name in ("knn_k", "few_shot_seeds", "counting_max", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.workers < 0:
            raise ConfigError(f"workers must be >= 0, got {self.workers}")


def suite_headline(suite: dict) -> dict:
    """One number per task and dataset (few-shot: one per shot count), for a command line's one-line summary."""
    def main_metric(task: str, metrics: dict):
        if task == "retrieval":
            return round(metrics["mean_recall"], 2)
        if task == "few_shot":
            return {shot: round(m["top1"], 2) for shot, m in metrics.items()}
        return round(metrics["top1"], 2)
    return {task: {name: main_metric(task, m) for name, m in per.items()} for task, per in suite.items()}


def split_file_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "dataset"


def run_entry(ctx: TaskContext, entry: SuiteEntry, out: Path) -> tuple[dict[str, dict], dict]:
    """The tasks of one dataset: ``({task: metrics}, extra facts for the meta file)``."""
    if entry.kind == "captions":
        return run_retrieval(ctx, entry), {}
    if entry.kind == "detection":
        return run_counting(ctx, entry), {}
    split = load_class_split(entry.path, entry.train, entry.test, ctx.settings.train_fraction)
    split_path = out / "splits" / f"{split_file_name(entry.name)}.json"
    split_path.parent.mkdir(parents=True, exist_ok=True)
    write_split_lists(split, split_path)
    return run_classification(ctx, entry, split), {**split.describe(), "split_list": str(split_path)}


def run_suite(cfg: SuiteConfig, bundle=None) -> dict[str, Any]:
    """Run every dataset of ``cfg.suite``; returns ``suite.json``'s content (task -> dataset -> metrics)."""
    cfg.validate()
    t0 = time.perf_counter()
    suite_path, entries = load_suite(cfg.suite, cfg.data_root)
    out = check_output_dir(cfg.output)
    device = resolve_device(cfg.device)
    checkpoint = cfg.checkpoint or None
    model_name = getattr(bundle, "name", None) or (check_model_inputs(cfg.model, checkpoint) if bundle is None else cfg.model)
    out.mkdir(parents=True, exist_ok=True)
    if bundle is None:
        bundle = load_bundle(model_name, checkpoint, device, allow_torchscript=cfg.allow_torchscript)
    cache = FeatureCache(cfg.cache or None, *model_key(model_name, checkpoint, bundle.quick_gelu, bundle.preprocess_val))
    ctx = TaskContext(bundle, device, cache, cfg)
    suite: dict[str, dict] = {}
    datasets, seconds = [], {"load": round(time.perf_counter() - t0, 3)}
    for entry in entries:
        status = {"name": entry.name, "tasks": entry.tasks, "path": str(entry.path or entry.train)}
        why = entry.missing()
        if why:
            log.warning("suite: skipping %s (%s)", entry.name, why)
            datasets.append({**status, "status": "skipped", "reason": why})
            continue
        t = time.perf_counter()
        try:
            results, extra = run_entry(ctx, entry, out)
        except (EvalError, ValueError, OSError) as exc:  # one bad dataset never stops the suite
            log.error("suite: %s failed: %s", entry.name, first_line(exc))
            datasets.append({**status, "status": "failed", "reason": first_line(exc)})
            continue
        for task, metrics in results.items():
            suite.setdefault(task, {})[entry.name] = metrics
        seconds[entry.name] = round(time.perf_counter() - t, 3)
        datasets.append({**status, "status": "ran", **extra})
        log.info("suite: %s done in %.1f s (%s)", entry.name, seconds[entry.name], ", ".join(results))
    suite = {task: suite[task] for task in TASKS if task in suite}
    meta = {
        "model": model_name, "checkpoint": checkpoint, "quick_gelu": bool(bundle.quick_gelu),
        "model_source": str(Path(checkpoint).expanduser().resolve()) if checkpoint else "random init (seed 0)",
        "suite": str(suite_path), "datasets": datasets,
        "status_counts": dict(Counter(d["status"] for d in datasets)),
        "feature_cache": {"folder": str(cache.folder) if cache.folder else None, "reused": cache.hits,
                          "embedded": cache.computed},
        "device": str(device), "settings": to_dict(cfg), "seconds": seconds,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_write_json(out / "suite.json", suite)
    atomic_write_json(out / "suite_meta.json", meta)
    write_suite_report(out, suite, meta)
    log.info("suite: %s -> %s", meta["status_counts"], out / "suite.md")
    if not suite:  # a wrong --data-root skips every dataset: say so instead of an empty table and exit status 0
        first = datasets[0] if datasets else {}
        raise EvalError(f"none of the {len(datasets)} datasets of {suite_path} ran ({meta['status_counts']}; first: "
                        f"{first.get('name')}: {first.get('reason')}); relative paths are taken from --data-root "
                        f"({cfg.data_root or 'the current folder'})")
    return suite
