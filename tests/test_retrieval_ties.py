"""Exact score ties (captions repeated word for word, duplicate images): recall@k counts them as
clip_benchmark's ``recall_at_k`` does on CPU, through its own ``evaluate`` and at sizes that need several
faiss query batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import clip_pretrain.evaluate.recall as recall
from clip_pretrain.evaluate.recall import recall_at_k, slow_recall_at_k

KS = (1, 5, 10)
SIX = [f"{d}_R@{k}" for d in ("i2t", "t2i") for k in KS]


def duplicate_case(n_images: int, dim: int, seed: int, caps: int = 5, shuffle: bool = False):
    """Raw (unnormalised) float32 embeddings like RSICD/UCM: scenes of a few classes, about a third of the
    images exact copies of another image, and 60% of the captions drawn word for word from a class's three
    stock sentences (identical embeddings across many images); the rest are the image's own. ``t2i`` is
    grouped by image (clip_benchmark's text order) unless ``shuffle``."""
    rng = np.random.default_rng(seed)
    n_classes = 4
    centres = rng.standard_normal((n_classes, dim))
    scenes = centres[rng.integers(0, n_classes, n_images)] + 0.8 * rng.standard_normal((n_images, dim))
    copy_of = np.where(rng.random(n_images) < 0.35, rng.integers(0, n_images, n_images), np.arange(n_images))
    img = scenes[copy_of]
    cls = np.argmin(((img[:, None] - centres[None]) ** 2).sum(-1), axis=1)
    stock = centres[:, None] + 0.5 * rng.standard_normal((n_classes, 3, dim))
    t2i = np.repeat(np.arange(n_images), caps)
    if shuffle:
        rng.shuffle(t2i)
    txt = np.empty((len(t2i), dim))
    for j, i in enumerate(t2i):
        txt[j] = stock[cls[i], rng.integers(0, 3)] if rng.random() < 0.6 else img[i] + rng.standard_normal(dim)
    return img.astype(np.float32), txt.astype(np.float32), t2i


def random_grouped_case(n_images: int, dim: int, seed: int, caps: int = 5):
    rng = np.random.default_rng(seed)
    img = rng.standard_normal((n_images, dim)).astype(np.float32)
    t2i = np.repeat(np.arange(n_images), caps)
    txt = (img[t2i] + 1.3 * rng.standard_normal((len(t2i), dim))).astype(np.float32)
    return img, txt, t2i


def unit_rows(raw: np.ndarray) -> np.ndarray:
    """What our encoders hand to recall_at_k: torch's F.normalize of the model output (as clip_benchmark's)."""
    return F.normalize(torch.from_numpy(raw), dim=-1).numpy()


class TableModel(torch.nn.Module):
    """A 'model' whose image and text embeddings are looked up by index: clip_benchmark's evaluate runs as is."""

    def __init__(self, img: np.ndarray, txt: np.ndarray):
        super().__init__()
        self.img, self.txt = torch.from_numpy(img), torch.from_numpy(txt)

    def encode_image(self, idx):
        return self.img[idx]

    def encode_text(self, idx):
        return self.txt[idx]


def clip_benchmark_evaluate(img_raw: np.ndarray, txt_raw: np.ndarray, t2i: np.ndarray, batch: int = 16) -> dict:
    """clip_benchmark.metrics.zeroshot_retrieval.evaluate on CPU in float32, in our key names and percent."""
    from clip_benchmark.metrics.zeroshot_retrieval import evaluate

    caps = [np.flatnonzero(t2i == i).tolist() for i in range(len(img_raw))]
    loader = [(torch.arange(s, min(s + batch, len(img_raw))), [[str(j) for j in caps[i]] for i in
               range(s, min(s + batch, len(img_raw)))]) for s in range(0, len(img_raw), batch)]
    tokenizer = lambda texts: torch.tensor([int(t) for t in texts], dtype=torch.long)  # noqa: E731
    m = evaluate(TableModel(img_raw, txt_raw), loader, tokenizer, "cpu", amp=False, recall_k_list=list(KS))
    out = {}
    for k in KS:
        out[f"t2i_R@{k}"] = 100 * m[f"image_retrieval_recall@{k}"]  # a text retrieves its image
        out[f"i2t_R@{k}"] = 100 * m[f"text_retrieval_recall@{k}"]  # an image retrieves its captions
    out["mean_recall"] = float(np.mean([out[k] for k in SIX]))
    return out


def clip_benchmark_recall(img: np.ndarray, txt: np.ndarray, t2i: np.ndarray) -> dict:
    """clip_benchmark's recall_at_k on the scores and positive pairs its evaluate builds (any text order)."""
    from clip_benchmark.metrics.zeroshot_retrieval import recall_at_k as cb_recall_at_k

    scores = torch.from_numpy(txt) @ torch.from_numpy(img).t()
    positive = torch.zeros_like(scores, dtype=torch.bool)
    positive[torch.arange(len(scores)), torch.from_numpy(t2i)] = True
    out = {}
    for k in KS:
        out[f"t2i_R@{k}"] = 100 * (cb_recall_at_k(scores, positive, k) > 0).float().mean().item()
        out[f"i2t_R@{k}"] = 100 * (cb_recall_at_k(scores.T, positive.T, k) > 0).float().mean().item()
    out["mean_recall"] = float(np.mean([out[k] for k in SIX]))
    return out


def lower_index_rule(img: np.ndarray, txt: np.ndarray, t2i: np.ndarray) -> dict:
    """The rule this module used before: ties to the lower index (a stable descending sort)."""
    scores = (torch.from_numpy(txt) @ torch.from_numpy(img).t()).numpy()
    out = {}
    directions = (("i2t", scores.T, lambda q, ids: t2i[ids] == q), ("t2i", scores, lambda q, ids: ids == t2i[q]))
    for name, rows, positive in directions:
        ranks = np.array([np.flatnonzero(positive(q, np.argsort(-r, kind="stable")))[:1].tolist() or [10 ** 9]
                          for q, r in enumerate(rows)])[:, 0]
        for k in KS:
            out[f"{name}_R@{k}"] = 100 * float(np.mean(ranks < k))
    return out


def assert_equal_to(ours: dict, ref: dict) -> None:
    for key in SIX + ["mean_recall"]:  # clip_benchmark's recall is a float32 fraction: compare fractions to 1e-6
        assert ours[key] / 100 == pytest.approx(ref[key] / 100, abs=1e-6), (key, ours[key], ref[key])


# ---------------------------------------------------------------- torch.topk's own behaviour


def test_torch_topk_ties_follow_no_index_rule():
    """What the metric has to reproduce: on CPU torch.topk keeps the tied members std::nth_element leaves in
    front (64 * k > row length) or std::partial_sort's heap keeps (otherwise): not "lowest index wins"."""
    picked = sorted(torch.topk(torch.zeros(40), 5).indices.tolist())
    assert picked != [0, 1, 2, 3, 4] and picked != [35, 36, 37, 38, 39]
    assert sorted(torch.topk(torch.zeros(640), 10).indices.tolist()) == list(range(10))  # heap path, all tied
    rows = torch.from_numpy(np.random.default_rng(0).integers(0, 4, size=(8, 300)).astype(np.float32))
    once = torch.topk(rows, 7, dim=1).indices
    assert torch.equal(once, torch.topk(rows.T.contiguous().T, 7, dim=1).indices)  # layout does not matter
    assert torch.equal(once[3], torch.topk(rows[3].clone(), 7).indices)  # nor the other rows


# ---------------------------------------------------------------- against clip_benchmark


@pytest.mark.parametrize("n_images,seed,search_batch", [(12, 0, 16384), (12, 3, 5), (40, 1, 7), (300, 2, 64)])
def test_duplicates_match_clip_benchmark_evaluate(n_images, seed, search_batch):
    img_raw, txt_raw, t2i = duplicate_case(n_images, 16, seed)
    ours = recall_at_k(unit_rows(img_raw), unit_rows(txt_raw), t2i, batch_size=search_batch, use_gpu=False)
    ref = clip_benchmark_evaluate(img_raw, txt_raw, t2i)
    assert_equal_to(ours, ref)
    assert_equal_to(slow_recall_at_k(unit_rows(img_raw), unit_rows(txt_raw), t2i), ref)
    if n_images >= 40:  # the case is one where the tie rule matters
        assert any(abs(lower_index_rule(unit_rows(img_raw), unit_rows(txt_raw), t2i)[k] - ref[k]) > 1e-3 for k in SIX)


@pytest.mark.parametrize("n_images,seed", [(12, 7), (300, 8)])
def test_random_embeddings_match_clip_benchmark_evaluate(n_images, seed):
    img_raw, txt_raw, t2i = random_grouped_case(n_images, 32, seed)
    ours = recall_at_k(unit_rows(img_raw), unit_rows(txt_raw), t2i, batch_size=64, use_gpu=False)
    assert_equal_to(ours, clip_benchmark_evaluate(img_raw, txt_raw, t2i))


@pytest.mark.parametrize("n_images,seed,search_batch", [(30, 4, 4), (220, 5, 50)])
def test_duplicates_with_shuffled_captions_match_clip_benchmark(n_images, seed, search_batch):
    img_raw, txt_raw, t2i = duplicate_case(n_images, 16, seed, shuffle=True)
    img, txt = unit_rows(img_raw), unit_rows(txt_raw)
    ours = recall_at_k(img, txt, t2i, batch_size=search_batch, use_gpu=False)
    assert_equal_to(ours, clip_benchmark_recall(img, txt, t2i))


def test_degenerate_all_identical_and_zero_embeddings():
    rng = np.random.default_rng(9)
    v, w = rng.standard_normal(8).astype(np.float32), rng.standard_normal(8).astype(np.float32)
    for n_images in (12, 70, 700):  # nth_element and partial_sort paths of torch.topk, in both directions
        img, txt = np.tile(unit_rows(v[None]), (n_images, 1)), np.tile(unit_rows(w[None]), (2 * n_images, 1))
        t2i = np.repeat(np.arange(n_images), 2)
        img[1] = 0.0  # a zero embedding scores 0 against everything
        assert_equal_to(recall_at_k(img, txt, t2i, batch_size=9, use_gpu=False), clip_benchmark_recall(img, txt, t2i))


def test_tie_free_queries_are_not_recomputed(monkeypatch):
    calls = []
    real = recall.clip_benchmark_rows
    monkeypatch.setattr(recall, "clip_benchmark_rows", lambda *a, **k: calls.append(len(a[0])) or real(*a, **k))
    img_raw, txt_raw, t2i = random_grouped_case(200, 32, 11)
    recall_at_k(unit_rows(img_raw), unit_rows(txt_raw), t2i, batch_size=64, use_gpu=False)
    assert calls == []  # random embeddings: faiss's top k decides everything
    img_raw, txt_raw, t2i = duplicate_case(200, 16, 12)
    recall_at_k(unit_rows(img_raw), unit_rows(txt_raw), t2i, batch_size=64, use_gpu=False)
    assert 0 < sum(calls) < 200 + 1000  # only queries whose positive sits in a tied group at a cut-off
