"""Classifiers on frozen image features, RemoteCLIP's linear-probe, k-NN and few-shot protocols. Pure functions on
numpy arrays (float32 unit rows, int labels), so they can be checked against plain sklearn on the same features.

* :func:`linear_probe`: sklearn ``LogisticRegression`` (newton-cg, multinomial) on the features as they are (already
  L2-normalised, no standardisation). The inverse regularisation ``C`` is chosen on a validation split of the
  train split (:func:`validation_split`, 20 % per class), then the probe is refit on the whole train split with
  that ``C`` and scored on test: clip_benchmark's protocol, with sklearn's solver instead of its torch one.
* :func:`knn_classify`: cosine k-NN (inner product of unit rows, faiss), majority vote of the k nearest training
  images, a tied vote going to the lowest class index (sklearn's ``KNeighborsClassifier`` rule).
* :func:`few_shot`: the linear probe trained on n images per class (drawn per seed from the train split, fixed ``C``
  since a 1-shot split has nothing to validate on), mean and standard deviation over seeds.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

DEFAULT_C_GRID = (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)


def top1(pred: np.ndarray, labels: np.ndarray) -> float:
    return float(100.0 * np.mean(pred == labels)) if len(labels) else 0.0


SOLVER = "newton-cg"  # converges in ~10x fewer iterations than lbfgs at large C (measured: 13 vs 257 on AID features)
SMALL_PROBLEM = 2_000_000  # rows x features below which BLAS threads cost more than they give (measured 5-20x slower)


def fit_logistic(x: np.ndarray, y: np.ndarray, c: float, max_iter: int = 1000):
    """sklearn's multinomial LogisticRegression (newton-cg); convergence warnings are not printed (a probe that stops
    at ``max_iter`` is still a probe). Small problems run on one BLAS thread."""
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    limits = 1 if x.shape[0] * x.shape[1] < SMALL_PROBLEM else None
    with warnings.catch_warnings(), threadpool_limits(limits=limits):
        warnings.simplefilter("ignore")
        return LogisticRegression(C=c, max_iter=max_iter, solver=SOLVER).fit(x, y)


def validation_split(labels: np.ndarray, fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(fit indices, validation indices) of a train split: per class a seeded shuffle, ``ceil(fraction x n)`` images
    to validation for classes of at least 2 images (a class of one stays in fit). Indices sorted."""
    rng = np.random.default_rng(seed)
    fit, val = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        n_val = int(np.ceil(fraction * len(idx))) if len(idx) >= 2 else 0
        val.extend(idx[:n_val].tolist())
        fit.extend(idx[n_val:].tolist())
    return np.asarray(sorted(fit), dtype=np.int64), np.asarray(sorted(val), dtype=np.int64)


def choose_c(x: np.ndarray, y: np.ndarray, c_grid: Sequence[float], seed: int = 0) -> tuple[float, dict[str, float]]:
    """The ``C`` of ``c_grid`` with the best validation top-1 (ties: the smaller ``C``), and every C's score."""
    fit, val = validation_split(y, seed=seed)
    if len(val) == 0 or len(np.unique(y[fit])) < 2:
        return float(sorted(c_grid)[len(c_grid) // 2]), {}
    scores = {}
    for c in sorted(c_grid):
        scores[repr(float(c))] = top1(fit_logistic(x[fit], y[fit], c).predict(x[val]), y[val])
    best = max(scores.items(), key=lambda kv: (kv[1], -float(kv[0])))
    return float(best[0]), scores


def linear_probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
                 c_grid: Sequence[float] = DEFAULT_C_GRID, seed: int = 0) -> dict:
    """Top-1 (percent) of a logistic-regression probe; ``C`` chosen on a validation split, then refit on all of train."""
    c, val_scores = choose_c(train_x, train_y, c_grid, seed)
    pred = fit_logistic(train_x, train_y, c).predict(test_x)
    return {"top1": top1(pred, test_y), "C": c, "validation_top1": val_scores, "n_train": int(len(train_y)),
            "n_test": int(len(test_y))}


def knn_predict(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, k: int = 20) -> np.ndarray:
    """Majority vote of the k nearest training rows by inner product (cosine for unit rows); ties -> lowest label."""
    import faiss

    k = min(k, len(train_x))
    index = faiss.IndexFlatIP(train_x.shape[1])
    index.add(np.ascontiguousarray(train_x, dtype=np.float32))
    _, nn = index.search(np.ascontiguousarray(test_x, dtype=np.float32), k)
    n_classes = int(train_y.max()) + 1
    votes = np.zeros((len(test_x), n_classes), dtype=np.int64)
    np.add.at(votes, (np.repeat(np.arange(len(test_x)), k), train_y[nn].ravel()), 1)
    return votes.argmax(axis=1)  # argmax takes the first (lowest) of tied classes


def knn_classify(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, k: int = 20) -> dict:
    return {"top1": top1(knn_predict(train_x, train_y, test_x, k), test_y), "k": int(min(k, len(train_x))),
            "n_train": int(len(train_y)), "n_test": int(len(test_y))}


def sample_shots(labels: np.ndarray, shots: int, seed: int) -> tuple[np.ndarray, int]:
    """Indices of ``shots`` images per class drawn without replacement (seeded); a class with fewer gives all it has.
    Returns (indices sorted, number of classes that had fewer than ``shots``)."""
    rng = np.random.default_rng([seed, shots])
    picked, short = [], 0
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        short += len(idx) < shots
        picked.extend(rng.choice(idx, size=min(shots, len(idx)), replace=False).tolist())
    return np.asarray(sorted(picked), dtype=np.int64), short


def few_shot(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
             shots: Sequence[int] = (1, 2, 4, 8, 16), seeds: int = 5, c: float = 1.0) -> dict[str, dict]:
    """``{"N-shot": {"top1": mean over seeds, "top1_std": standard deviation over seeds (ddof 1; 0 for one seed),
    "per_seed": [...], "seeds", "classes_with_fewer_images"}}``."""
    out = {}
    for n in shots:
        runs, short = [], 0
        for seed in range(seeds):
            idx, short = sample_shots(train_y, n, seed)
            if len(np.unique(train_y[idx])) < 2:
                raise ValueError("few-shot needs at least 2 classes in the train split")
            runs.append(top1(fit_logistic(train_x[idx], train_y[idx], c).predict(test_x), test_y))
        out[f"{n}-shot"] = {"top1": float(np.mean(runs)), "top1_std": float(np.std(runs, ddof=1)) if len(runs) > 1 else 0.0,
                            "per_seed": runs, "seeds": seeds, "C": c, "classes_with_fewer_images": int(short)}
    return out
