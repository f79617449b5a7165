"""Train/test splits of class-folder datasets for the suite's classification tasks (linear probe, k-NN, few-shot,
zero-shot).

A dataset that ships split (``train`` and ``test`` class-folder roots) keeps its split. A single class-folder tree
is split per class by RemoteCLIP's rule: the images of each class sorted by file name (their path relative to the
class folder, plain string order), the first 80 % (rounded down, at least one) train, the rest test. The split is
a pure function of the file names, so it is the same on every machine; :func:`write_split_lists` writes it out so
another tool can reuse it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clip_pretrain.evaluate.common import EvalError
from clip_pretrain.evaluate.zeroshot import ClassFolders, list_class_folders
from rs_common.files import atomic_write_json, rel_posix

SPLIT_RULE = ("per class, images sorted by their path inside the class folder (plain string order); the first "
              "floor(train_fraction x n) (at least 1, and at least 1 left for test when n >= 2) are train, the rest test")


@dataclass
class ClassSplit:
    """Images and labels of one classification dataset, split in train and test; labels index ``classes``."""

    classes: list[str]
    train: list[Path]
    train_labels: np.ndarray
    test: list[Path]
    test_labels: np.ndarray
    rule: str  # "shipped" or SPLIT_RULE
    roots: dict[str, str]
    empty: list[str]

    def describe(self) -> dict:
        return {"n_classes": len(self.classes), "n_train": len(self.train), "n_test": len(self.test),
                "split_rule": self.rule, "roots": self.roots, "empty_class_folders": self.empty}


def n_train_of(n: int, train_fraction: float) -> int:
    """How many of a class's ``n`` images go to train."""
    if n < 2:
        return n
    return min(max(1, math.floor(train_fraction * n + 1e-9)), n - 1)


def split_by_name(folders: ClassFolders, root: Path, train_fraction: float = 0.8) -> ClassSplit:
    """RemoteCLIP's 8:2 rule on one class-folder tree (see the module docstring)."""
    train, train_labels, test, test_labels = [], [], [], []
    for label, name in enumerate(folders.classes):
        files = sorted((p for p, y in zip(folders.images, folders.labels) if y == label),
                       key=lambda p: rel_posix(p, root / name))
        cut = n_train_of(len(files), train_fraction)
        train += files[:cut]
        train_labels += [label] * cut
        test += files[cut:]
        test_labels += [label] * (len(files) - cut)
    return ClassSplit(folders.classes, train, np.asarray(train_labels, dtype=np.int64), test,
                      np.asarray(test_labels, dtype=np.int64), SPLIT_RULE, {"all": str(root)}, folders.empty)


def shipped_split(train_root: Path, test_root: Path) -> ClassSplit:
    """A dataset shipped as ``train`` and ``test`` class-folder roots. Classes are the union of both, sorted; a test
    class without training images is an EvalError (a probe could never predict it)."""
    tr, te = list_class_folders(train_root), list_class_folders(test_root)
    missing = sorted(set(te.classes) - set(tr.classes))
    if missing:
        raise EvalError(f"{test_root}: test classes {missing} have no images in the train root {train_root}")
    classes = sorted(set(tr.classes) | set(te.classes))
    index = {c: i for i, c in enumerate(classes)}
    remap = lambda f: np.asarray([index[f.classes[y]] for y in f.labels], dtype=np.int64)  # noqa: E731
    return ClassSplit(classes, list(tr.images), remap(tr), list(te.images), remap(te), "shipped",
                      {"train": str(train_root), "test": str(test_root)}, sorted(set(tr.empty) | set(te.empty)))


def load_class_split(path: str | Path | None = None, train: str | Path | None = None, test: str | Path | None = None,
                     train_fraction: float = 0.8) -> ClassSplit:
    """``train`` + ``test`` roots when given (the dataset's own split), else ``path`` split by :func:`split_by_name`."""
    if train or test:
        if not (train and test):
            raise EvalError(f"give both train and test roots, or neither (got train={train!r}, test={test!r})")
        return shipped_split(Path(train).expanduser(), Path(test).expanduser())
    if not path:
        raise EvalError("a class-folder dataset needs a path (or train and test roots)")
    if not 0 < train_fraction < 1:
        raise EvalError(f"train_fraction must be in (0, 1), got {train_fraction}")
    root = Path(path).expanduser()
    return split_by_name(list_class_folders(root), root, train_fraction)


def write_split_lists(split: ClassSplit, path: Path) -> None:
    """The split as JSON: ``{"rule", "roots", "classes", "train": [[file, class], ...], "test": [...]}``, files
    relative to their root where they lie under it (absolute otherwise)."""
    roots = [Path(r) for r in split.roots.values()]

    def rel(p: Path) -> str:
        for r in roots:
            if p.is_relative_to(r):
                return rel_posix(p, r)
        return str(p)

    atomic_write_json(path, {
        "rule": split.rule, "roots": split.roots, "classes": split.classes,
        "train": [[rel(p), split.classes[y]] for p, y in zip(split.train, split.train_labels.tolist())],
        "test": [[rel(p), split.classes[y]] for p, y in zip(split.test, split.test_labels.tolist())],
    })
