"""Image-text retrieval recall@k with faiss: the metric and its tie rule.

Metric (RemoteCLIP / clip_benchmark convention, see ``../shared/REFERENCE.md``): every image is a query
against all texts (image->text, ``i2t``) and every text a query against all images (text->image, ``t2i``).
A query is a hit at k when ANY of its positives is among its k best-scoring items: an image's positives
are its captions (about five), a text's only positive is its image. ``R@k`` is the percentage of queries
that hit; ``mean_recall`` is the mean of the six numbers R@{1,5,10} x {i2t, t2i}.

Scale: embeddings are L2-normalised float32 and searched with faiss's exact inner-product index
(``IndexFlatIP``; a GPU index when faiss has GPUs and CUDA is present), queries in batches, keeping only the
best ``max(ks) + 1`` ids per query. Memory is the two embedding matrices, one copy of the database side inside
the index, and O(batch x max(ks)) per batch; no N x N score matrix is ever built (open_clip_train's and
clip_benchmark's evaluations build one), so 1M images x 5M captions is fine.

Ties (RSICD, UCM and RSITMD repeat captions word for word, so exact score ties are common): a query counts
exactly as clip_benchmark's ``recall_at_k`` counts it on CPU, i.e. "hit at k" means ``torch.topk(row, k)``
returns a positive, where ``row`` is the query's float32 row of ``texts_emb @ images_emb.T`` (its column for
an image query). ``torch.topk`` on CPU (``aten/src/ATen/native/TopKImpl.h``) picks the members of a tied
group at the cut-off by whatever libstdc++'s ``std::partial_sort`` (when ``64 * k <= row length``) or
``std::nth_element`` (otherwise) leaves in front: deterministic for a given row, but neither "lowest index
wins" nor "highest index wins", and it depends on the whole row (see ``topk_hits``). Only the SET of the top k
matters to the metric. So: where the k-th and (k+1)-th best faiss scores differ by more than ``TIE_TOL`` the
top-k set is unambiguous and faiss's answer is used; where they tie and a positive sits in the tied group (not
above it), the query's full score row is recomputed with torch in float32, oriented as clip_benchmark computes
it, and ``torch.topk`` itself decides. A GPU ``torch.topk`` (clip_benchmark evaluating with ``device=cuda``)
breaks such ties differently (by its CUDA source, not run here: the lowest indices of the tied group win); this
module follows the CPU. ``k`` at or above the database size counts every item (clip_benchmark's ``topk`` raises there).
Images without captions can never be hits as i2t queries (they count as misses, as in clip_benchmark).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch

from clip_pretrain.evaluate.common import EvalError

log = logging.getLogger(__name__)


DEFAULT_KS = (1, 5, 10)


def _check_ks(ks: Iterable[int]) -> tuple[int, ...]:
    ks = tuple(sorted({int(k) for k in ks}))
    if not ks or ks[0] < 1:
        raise EvalError(f"ks must be positive integers, got {ks}")
    return ks


def normalise_rows(emb: Any, name: str = "embeddings", chunk: int = 65536) -> np.ndarray:
    """``emb`` as a C-contiguous float32 array with unit rows (zero rows stay zero).

    Already-normalised float32 input is returned as it is (no copy); otherwise the normalised copy is made
    chunk by chunk, so no temporary larger than ``chunk`` rows is created. The caller's array is never changed.
    """
    arr = emb.detach().float().cpu().numpy() if isinstance(emb, torch.Tensor) else np.asarray(emb)
    if arr.ndim != 2:
        raise EvalError(f"{name} must be a 2-D (n, dim) array, got shape {arr.shape}")
    src = arr
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    norms = np.empty(len(arr), dtype=np.float32)
    for s in range(0, len(arr), chunk):
        block = arr[s:s + chunk]
        norms[s:s + chunk] = np.sqrt(np.einsum("ij,ij->i", block, block))
    if not np.all(np.isfinite(norms)):
        raise EvalError(f"{name} holds NaN or inf values (row {int(np.flatnonzero(~np.isfinite(norms))[0])})")
    if np.all(np.abs(norms - 1.0) < 1e-4):
        return arr
    if arr is src or np.shares_memory(arr, src):
        arr = arr.copy()
    scale = 1.0 / np.maximum(norms, 1e-12)
    scale[norms == 0] = 0.0
    for s in range(0, len(arr), chunk):
        arr[s:s + chunk] *= scale[s:s + chunk, None]
    return arr


def _check_mapping(text_to_image: Any, n_images: int, n_texts: int) -> np.ndarray:
    t2i = np.asarray(text_to_image, dtype=np.int64).reshape(-1)
    if len(t2i) != n_texts:
        raise EvalError(f"text_to_image has {len(t2i)} entries for {n_texts} texts")
    if n_texts and (t2i.min() < 0 or t2i.max() >= n_images):
        raise EvalError(f"text_to_image holds image indices outside 0..{n_images - 1}")
    return t2i


def faiss_gpu_available() -> bool:
    """True when faiss was built with GPU support, sees a GPU, and torch sees CUDA too."""
    import faiss

    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0 and torch.cuda.is_available()


class FlatIPSearcher:
    """Exact inner-product top-k over ``database`` (faiss ``IndexFlatIP``, on GPU when asked)."""

    def __init__(self, database: np.ndarray, use_gpu: bool | None = None):
        import faiss

        if use_gpu is None:
            use_gpu = faiss_gpu_available()
        elif use_gpu and not faiss_gpu_available():
            raise EvalError("use_gpu=True but faiss has no GPU support here (install faiss-gpu and check CUDA); "
                            "pass use_gpu=None to fall back to the CPU index")
        self.use_gpu = bool(use_gpu)
        self.n = len(database)
        index = faiss.IndexFlatIP(database.shape[1])
        if self.use_gpu:
            self._res = faiss.StandardGpuResources()  # must outlive the index
            index = faiss.index_cpu_to_gpu(self._res, 0, index)
        index.add(database)
        self.index = index

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids), each (n_queries, min(k, n)), ordered by score desc then id asc. Which members of a
        tied group at the cut-off faiss keeps is its own affair (the metric does not rely on it: ``topk_hits``)."""
        k = min(k, self.n)
        scores, ids = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
        order = np.lexsort((ids, -scores), axis=-1)
        return np.take_along_axis(scores, order, axis=1), np.take_along_axis(ids, order, axis=1)


# faiss and torch compute the same float32 dot products with different summation orders; their scores for one
# pair differ by far less than this (a few 1e-7 at dim 512-1024). Gaps at or below it are treated as possible
# ties and handed to torch (more recomputation, never a wrong answer); gaps above it are real.
TIE_TOL = 1e-5
ROW_BLOCK_FLOATS = 1 << 25  # recomputed score rows held at once: 128 MB of float32


def _as_tensor(arr: np.ndarray) -> torch.Tensor:
    """A tensor view of ``arr`` (no copy; a read-only array is only read)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "The given NumPy array is not writable"
        return torch.from_numpy(arr)


def clip_benchmark_rows(queries: np.ndarray, database: np.ndarray, queries_are_texts: bool) -> torch.Tensor:
    """The queries' float32 score rows as clip_benchmark computes them: ``texts_emb @ images_emb.T`` (a text's
    row), or its transpose (an image's row, a column of that product). CPU torch, like its scores."""
    q, db = _as_tensor(queries), _as_tensor(database)
    return q @ db.T if queries_are_texts else (db @ q.T).T


def topk_hits(
    queries: np.ndarray,
    database: np.ndarray,
    is_positive: Callable[[np.ndarray, np.ndarray], np.ndarray],
    best_positive: np.ndarray,
    ks: Sequence[int],
    batch_size: int = 16384,
    use_gpu: bool | None = None,
    queries_are_texts: bool = False,
) -> np.ndarray:
    """``(n_queries, len(ks))`` booleans: does ``torch.topk(row, k)`` (clip_benchmark's CPU top k) hold a positive.

    ``is_positive(query_ids, ids)`` gets database ids, one row per query, and returns a boolean array of the
    same shape. ``best_positive[q]``: the score of query q's best positive (``-inf`` when it has none).

    Each batch of queries is searched with faiss for its ``max(ks) + 1`` best ids. For each k:

    * the k-th and (k+1)-th best scores differ by more than ``TIE_TOL``: the top-k set is the same whichever
      way ties inside it are ordered; hit = a positive among faiss's first k;
    * they tie, so ``torch.topk`` chooses some members of the tied group at the cut-off: hit when a positive
      scores above the tie (always inside), miss when the best positive scores below it (never inside); else
      (a positive is IN the tied group) the query's full row is recomputed (``clip_benchmark_rows``) and
      ``torch.topk(row, k)`` is asked, which is exactly clip_benchmark's call on an identically ordered row.
      ``torch.topk``'s choice depends on every element of the row (libstdc++ heap / introselect moves), so no
      shorter rule reproduces it. These rows cost one O(n_database x dim) product and one topk each.
    * ``k >= n_database``: every item is in; hit = the query has a positive.
    """
    ks = tuple(int(k) for k in ks)
    n_q, n_db = len(queries), len(database)
    hits = np.zeros((n_q, len(ks)), dtype=bool)
    if n_q == 0 or n_db == 0:
        return hits
    has_positive = best_positive > -np.inf
    searcher = FlatIPSearcher(database, use_gpu)
    depth = min(max(ks) + 1, n_db)
    open_q: list[np.ndarray] = []  # queries whose hit at ks[c] torch.topk must decide
    open_c: list[np.ndarray] = []
    for start in range(0, n_q, batch_size):
        qids = np.arange(start, min(start + batch_size, n_q))
        scores, ids = searcher.search(queries[qids], depth)
        positive = is_positive(qids, ids) & (ids >= 0)
        for c, k in enumerate(ks):
            if k >= n_db:
                hits[qids, c] = has_positive[qids]
                continue
            kth, after = scores[:, k - 1], scores[:, k]
            in_top = positive[:, :k]
            tied = kth - after <= TIE_TOL
            above = (in_top & (scores[:, :k] > (kth + TIE_TOL)[:, None])).any(axis=1)
            below = best_positive[qids] < kth - TIE_TOL
            hits[qids, c] = np.where(tied, above, in_top.any(axis=1))
            undecided = tied & ~above & ~below
            if undecided.any():
                open_q.append(qids[undecided])
                open_c.append(np.full(int(undecided.sum()), c))
    if open_q:
        _resolve_with_torch_topk(hits, np.concatenate(open_q), np.concatenate(open_c), queries, database,
                                 is_positive, ks, queries_are_texts)
    return hits


def _resolve_with_torch_topk(hits: np.ndarray, qs: np.ndarray, cs: np.ndarray, queries: np.ndarray,
                             database: np.ndarray, is_positive: Callable, ks: tuple[int, ...],
                             queries_are_texts: bool) -> None:
    order = np.argsort(qs, kind="stable")
    qs, cs = qs[order], cs[order]
    uniq = np.unique(qs)
    block = max(1, ROW_BLOCK_FLOATS // max(1, len(database)))
    log.debug("retrieval: %d queries have a positive tied at a cut-off; recomputing their rows", len(uniq))
    with torch.no_grad():
        for s in range(0, len(uniq), block):
            rows_q = uniq[s:s + block]
            rows = clip_benchmark_rows(queries[rows_q], database, queries_are_texts)
            lo, hi = np.searchsorted(qs, rows_q[0]), np.searchsorted(qs, rows_q[-1], side="right")
            for c in np.unique(cs[lo:hi]).tolist():
                sel_q = qs[lo:hi][cs[lo:hi] == c]
                sel = torch.from_numpy(np.searchsorted(rows_q, sel_q))
                idx = torch.topk(rows[sel], ks[c], dim=1).indices.numpy()
                hits[sel_q, c] = is_positive(sel_q, idx).any(axis=1)


def _recall_dict(i2t_hits: np.ndarray, t2i_hits: np.ndarray, ks: tuple[int, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, hits in (("i2t", i2t_hits), ("t2i", t2i_hits)):
        for c, k in enumerate(ks):
            out[f"{name}_R@{k}"] = float(100.0 * np.mean(hits[:, c])) if len(hits) else 0.0
    out["mean_recall"] = float(np.mean([out[f"{n}_R@{k}"] for n in ("i2t", "t2i") for k in ks]))
    out["n_images"] = int(len(i2t_hits))
    out["n_texts"] = int(len(t2i_hits))
    return out


def positive_scores(image_emb: np.ndarray, text_emb: np.ndarray, t2i: np.ndarray,
                    chunk: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """(best caption score per image, -inf without captions; each caption's score with its image), float64."""
    caption = np.empty(len(t2i), dtype=np.float64)
    for s in range(0, len(t2i), chunk):
        caption[s:s + chunk] = np.einsum("ij,ij->i", text_emb[s:s + chunk].astype(np.float64),
                                         image_emb[t2i[s:s + chunk]].astype(np.float64))
    best = np.full(len(image_emb), -np.inf)
    np.maximum.at(best, t2i, caption)
    return best, caption


def recall_at_k(
    image_emb: Any,
    text_emb: Any,
    text_to_image: Sequence[int] | np.ndarray,
    ks: Iterable[int] = DEFAULT_KS,
    batch_size: int = 16384,
    use_gpu: bool | None = None,
) -> dict[str, Any]:
    """Image->text and text->image recall@k in percent, ``mean_recall`` and the counts.

    ``image_emb`` (n_images, d), ``text_emb`` (n_texts, d): numpy arrays or tensors, normalised here if they
    are not already. ``text_to_image[j]`` is the image of caption j; the texts' order matters for ties exactly
    as it does in clip_benchmark (its order is the images' order, each image's captions in turn). Keys:
    ``i2t_R@k``, ``t2i_R@k`` for each k, ``mean_recall`` (mean of all of them), ``n_images``, ``n_texts``.
    Queries are searched ``batch_size`` at a time for the top ``max(ks) + 1`` only (bounded memory); ties count
    as clip_benchmark's CPU ``recall_at_k`` counts them (module doc, ``topk_hits``).
    ``use_gpu``: None = a GPU faiss index when available.
    """
    ks = _check_ks(ks)
    image_emb = normalise_rows(image_emb, "image_emb")
    text_emb = normalise_rows(text_emb, "text_emb")
    if image_emb.shape[1] != text_emb.shape[1]:
        raise EvalError(f"image_emb has dim {image_emb.shape[1]} but text_emb has dim {text_emb.shape[1]}")
    t2i = _check_mapping(text_to_image, len(image_emb), len(text_emb))
    best_caption, caption_score = positive_scores(image_emb, text_emb, t2i)
    i2t_hits = topk_hits(image_emb, text_emb, lambda q, ids: t2i[ids] == q[:, None], best_caption,
                         ks, batch_size, use_gpu, queries_are_texts=False)
    t2i_hits = topk_hits(text_emb, image_emb, lambda q, ids: ids == t2i[q][:, None], caption_score,
                         ks, batch_size, use_gpu, queries_are_texts=True)
    return _recall_dict(i2t_hits, t2i_hits, ks)


def slow_recall_at_k(image_emb: Any, text_emb: Any, text_to_image: Sequence[int] | np.ndarray,
                     ks: Iterable[int] = DEFAULT_KS) -> dict[str, Any]:
    """Reference for tests, clip_benchmark's recipe on the full matrix: ``scores = texts @ images.T`` (float32
    torch, CPU), ``torch.topk`` of each row (k capped at the row length), hit = a positive among them."""
    ks = _check_ks(ks)
    img = normalise_rows(image_emb, "image_emb")
    txt = normalise_rows(text_emb, "text_emb")
    t2i = _check_mapping(text_to_image, len(img), len(txt))
    scores = _as_tensor(txt) @ _as_tensor(img).T  # (n_texts, n_images)
    positive = torch.zeros(scores.shape, dtype=torch.bool)
    positive[torch.arange(len(t2i)), torch.from_numpy(t2i)] = True
    out = []
    for s, pos in ((scores.T, positive.T), (scores, positive)):
        hits = np.zeros((s.shape[0], len(ks)), dtype=bool)
        if s.shape[0] and s.shape[1]:
            for c, k in enumerate(ks):
                idx = torch.topk(s, min(k, s.shape[1]), dim=1).indices
                hits[:, c] = torch.gather(pos, 1, idx).any(dim=1).numpy()
        out.append(hits)
    return _recall_dict(out[0], out[1], ks)
