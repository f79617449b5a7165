"""Image-text retrieval evaluation: recall@k with faiss, eval sets, embedding, metrics and an HTML report.

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

import contextlib
import glob
import html
import json
import logging
import os
import tarfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clip_pretrain.models import TORCHSCRIPT_HELP
from shards.build_config import ImageConfig
from rs_common.config import ConfigError, to_dict
from shards.imageio import decode
from shards.readers._common import first_existing_dir, load_json_file
from shards.readers.captions import IMAGE_DIRS, caption_json_files, parse_entry
from shards.record import AnnotationError, LayoutError, SampleSkip
from shards.writer import atomic_write_json

log = logging.getLogger(__name__)

DEFAULT_KS = (1, 5, 10)
IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "tif", "tiff")
DECODE_CFG = ImageConfig(max_side=0)  # decode only: the model's preprocess resizes


class EvalError(ValueError):
    """A bad evaluation input (path, split, embeddings); the message names it and says what to do."""


# ====================================================================== recall@k


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


# ====================================================================== eval sets


@dataclass(frozen=True)
class EvalItem:
    """One evaluation image with its captions: a file, or a member of a tar (``offset``/``size`` of its data)."""

    key: str
    captions: tuple[str, ...]
    path: Path
    offset: int = -1
    size: int = 0
    member: str = ""

    @property
    def label(self) -> str:
        return f"{self.path}:{self.member}" if self.member else str(self.path)

    def read_bytes(self) -> bytes:
        try:
            if self.offset < 0:
                return self.path.read_bytes()
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                data = fh.read(self.size)
        except FileNotFoundError:
            raise SampleSkip("missing_image", f"{self.label}: image file not found") from None
        except OSError as exc:
            raise SampleSkip("unreadable_image", f"{self.label}: {exc}") from None
        if len(data) != self.size:
            raise SampleSkip("truncated_image", f"{self.label}: tar member is truncated")
        return data


@dataclass
class EvalSet:
    """Images with their captions, plus what was left out while listing them (counted by reason)."""

    items: list[EvalItem]
    kind: str  # "captions" | "shards"
    source: str
    split: str | None = None
    skipped: Counter = field(default_factory=Counter)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "source": self.source, "split": self.split, "images_listed": len(self.items),
                "captions_listed": sum(len(i.captions) for i in self.items), "skipped_when_listing": dict(self.skipped)}


def load_rgb(item: EvalItem | Path | str):
    """Decode one image to RGB (16-bit/4-band TIFFs, RGBA...: see ``shards.imageio``); raises SampleSkip."""
    if not isinstance(item, EvalItem):
        item = EvalItem(key=str(item), captions=(), path=Path(item))
    rgb, _, _ = decode(item.read_bytes(), Path(item.label), DECODE_CFG)
    return rgb


def _split_filter(split: str | None) -> set[str] | None:
    if split is None or split.strip().lower() in ("", "all", "*"):
        return None
    return {s.strip() for s in split.split(",") if s.strip()}


def load_karpathy_eval_set(captions: str | Path, images: str | Path | None = None, split: str | None = "test") -> EvalSet:
    """A Karpathy caption json (or a folder holding ``dataset*.json``) and its images, one split.

    ``split``: ``test`` (default), ``val``, a comma list (``val,test``) or ``all``. ``images``: the image
    folder; by default ``images/``, ``imgs/`` or ``RSICD_images/`` beside the json, else the json's folder
    (as the shard builder reads it). Entries without a file name or sentences are counted and left out.
    """
    root = Path(captions).expanduser()
    if not root.exists():
        raise EvalError(f"{root}: caption json not found")
    try:
        json_files = caption_json_files(root)
    except (FileNotFoundError, LayoutError) as exc:
        raise EvalError(str(exc)) from None
    data_root = root if root.is_dir() else root.parent
    if images is not None:
        images_dir = Path(images).expanduser()
        if images_dir.is_file():
            raise EvalError(f"{images_dir}: a file, not an image folder (--images takes the folder of the json's images)")
        if not images_dir.is_dir():
            raise EvalError(f"{images_dir}: image folder not found")
    else:
        images_dir = None
    wanted = _split_filter(split)
    items: list[EvalItem] = []
    skipped: Counter = Counter()
    split_counts: Counter = Counter()
    for json_path in json_files:
        try:
            data = load_json_file(json_path)
        except AnnotationError as exc:
            raise EvalError(str(exc)) from None
        if not isinstance(data, dict) or not isinstance(data.get("images"), list):
            raise EvalError(f'{json_path}: not a Karpathy caption json (expected an object with an "images" list)')
        folder = images_dir or first_existing_dir(data_root, IMAGE_DIRS) or json_path.parent
        for index, raw in enumerate(data["images"]):
            entry = parse_entry(raw, index, json_path, data_root, folder)
            split_counts[entry.split or "(none)"] += 1
            if wanted is not None and entry.split not in wanted:
                continue
            if entry.problem is not None:
                skipped["malformed_annotation"] += 1
                log.warning("%s: %s (left out)", json_path, entry.problem)
                continue
            items.append(EvalItem(key=entry.rel_path, captions=entry.captions, path=entry.image_path))
    if not items:
        present = ", ".join(f"{k} {v}" for k, v in sorted(split_counts.items())) or "none"
        raise EvalError(f"{root}: no usable images in split {split!r} (splits present: {present}); "
                        "pick one with --split, or --split all")
    return EvalSet(items, "captions", str(root), split or "all", skipped)


def expand_shard_pattern(pattern: str | Path) -> list[Path]:
    """A directory (its ``shard-*.tar``, else ``*.tar``), a tar file, a glob, or a brace pattern
    (``data/shard-{000000..000009}.tar``), sorted; several may be joined with ``::``."""
    out: list[Path] = []
    for part in str(pattern).split("::"):
        part = os.path.expanduser(part)
        p = Path(part)
        if p.is_dir():
            found = sorted(p.glob("shard-*.tar")) or sorted(p.glob("*.tar"))
            if not found:
                raise EvalError(f"{p}: folder holds no shard-*.tar or *.tar files")
            out.extend(found)
        elif p.is_file():
            out.append(p)
        elif "{" in part:
            from braceexpand import braceexpand

            paths = [Path(x) for x in braceexpand(part)]
            missing = [str(x) for x in paths if not x.is_file()]
            if missing:
                raise EvalError(f"{part}: {len(missing)} of {len(paths)} shards not found (first: {missing[0]})")
            out.extend(paths)
        elif any(c in part for c in "*?["):
            found = sorted(Path(x) for x in glob.glob(part))
            if not found:
                raise EvalError(f"{part}: the pattern matches no files")
            out.extend(found)
        else:
            raise EvalError(f"{part}: shard file or folder not found")
    return out


def _split_key(name: str) -> tuple[str, str]:
    """webdataset's convention: the key is the path up to the first dot of the file name."""
    head, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{head}/{stem}" if head else stem), ext.lower()


def load_shard_eval_set(pattern: str | Path) -> EvalSet:
    """Stage-0 webdataset shards as an eval set: per sample its ``json`` member's ``captions`` and its image
    (``jpg``, else png/jpeg/webp/tif). Only tar headers and the small json members are read here; images are
    read later by offset. Samples without captions or image are counted and left out."""
    shards = expand_shard_pattern(pattern)
    items: list[EvalItem] = []
    skipped: Counter = Counter()
    for shard in shards:
        samples: dict[str, dict[str, Any]] = {}
        try:
            with tarfile.open(shard, "r:") as tf:
                for member in tf:
                    if not member.isfile():
                        continue
                    key, ext = _split_key(member.name)
                    entry = samples.setdefault(key, {})
                    if ext == "json":
                        fh = tf.extractfile(member)
                        entry["json"] = fh.read() if fh is not None else b""
                    elif ext in IMAGE_EXTS and "image" not in entry:
                        entry["image"] = (member.offset_data, member.size, member.name)
        except (tarfile.TarError, OSError) as exc:
            raise EvalError(f"{shard}: not a readable tar shard ({exc})") from None
        for key, entry in samples.items():
            captions: tuple[str, ...] = ()
            if "json" in entry:
                try:
                    meta = json.loads(entry["json"])
                    caps = meta.get("captions") if isinstance(meta, dict) else None
                    if isinstance(caps, list):
                        captions = tuple(c.strip() for c in caps if isinstance(c, str) and c.strip())
                except (json.JSONDecodeError, UnicodeDecodeError):
                    skipped["malformed_json"] += 1
                    continue
            if "image" not in entry:
                skipped["no_image"] += 1
                continue
            if not captions:
                skipped["no_captions"] += 1
                continue
            offset, size, name = entry["image"]
            items.append(EvalItem(key=key, captions=captions, path=shard, offset=offset, size=size, member=name))
    if not items:
        raise EvalError(f"{pattern}: no samples with an image and captions in {len(shards)} shard(s) "
                        f"(left out: {dict(skipped) or 'none'})")
    return EvalSet(items, "shards", str(pattern), None, skipped)


# ====================================================================== embedding


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``auto`` -> cuda when available, else cpu; a device name torch does not know, or CUDA asked for on a machine
    without it, is an EvalError."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise EvalError(f"device {str(device)!r} is not a device name (use cpu, cuda, cuda:N or auto)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise EvalError(f"device {str(device)!r} asked for, but CUDA is not available here (use --device cpu)")
    return dev


def autocast_for(device: torch.device):
    """fp16 autocast on CUDA (as clip_benchmark evaluates), nothing on CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module):
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def _to_numpy_normalised(feats: torch.Tensor) -> np.ndarray:
    return torch.nn.functional.normalize(feats.float(), dim=-1).cpu().numpy()


class ImageDataset(torch.utils.data.Dataset):
    """Decoded and preprocessed images; a failure gives ``(index, None, reason, message)`` instead of raising."""

    def __init__(self, items: Sequence[EvalItem | Path | str], preprocess: Callable):
        self.items = items
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        item = self.items[index]
        try:
            return index, self.preprocess(load_rgb(item)), None, None
        except SampleSkip as exc:
            return index, None, exc.reason, str(exc)
        except Exception as exc:  # noqa: BLE001 - one bad image never stops an evaluation
            label = item.label if isinstance(item, EvalItem) else str(item)
            return index, None, "unreadable_image", f"{label}: {type(exc).__name__}: {exc}"


def _collate_list(batch):
    return batch


def encode_images(
    model: torch.nn.Module,
    preprocess: Callable,
    items: Sequence[EvalItem | Path | str],
    device: str | torch.device = "cpu",
    batch_size: int = 64,
    workers: int = 0,
) -> tuple[np.ndarray, np.ndarray, Counter]:
    """Embed images in batches (no_grad, eval mode, fp16 autocast on CUDA); unreadable ones are skipped.

    Returns ``(emb, kept, skipped)``: float32 unit rows for the images that decoded, in input order;
    ``kept`` the indices of those images in ``items``; ``skipped`` a Counter of reasons.
    """
    device = resolve_device(device)
    loader = torch.utils.data.DataLoader(
        ImageDataset(items, preprocess), batch_size=batch_size, shuffle=False, num_workers=workers,
        collate_fn=_collate_list, pin_memory=device.type == "cuda",
    )
    embs: list[np.ndarray] = []
    kept: list[int] = []
    skipped: Counter = Counter()
    with eval_mode(model), torch.no_grad(), autocast_for(device):
        for batch in loader:
            good = [(i, x) for i, x, reason, msg in batch if x is not None]
            for _, x, reason, msg in batch:
                if x is None:
                    skipped[reason] += 1
                    log.warning("skipped image: %s", msg)
            if not good:
                continue
            pixels = torch.stack([x for _, x in good]).to(device, non_blocking=True)
            embs.append(_to_numpy_normalised(model.encode_image(pixels)))
            kept.extend(i for i, _ in good)
    dim = int(embs[0].shape[1]) if embs else 0
    emb = np.concatenate(embs) if embs else np.zeros((0, dim), dtype=np.float32)
    return emb, np.asarray(kept, dtype=np.int64), skipped


def encode_texts(
    model: torch.nn.Module,
    tokenizer: Callable,
    texts: Sequence[str],
    device: str | torch.device = "cpu",
    batch_size: int = 256,
) -> np.ndarray:
    """Embed texts in batches (no_grad, eval mode, fp16 autocast on CUDA); float32 unit rows."""
    device = resolve_device(device)
    embs: list[np.ndarray] = []
    with eval_mode(model), torch.no_grad(), autocast_for(device):
        for start in range(0, len(texts), batch_size):
            tokens = tokenizer(list(texts[start:start + batch_size])).to(device)
            embs.append(_to_numpy_normalised(model.encode_text(tokens)))
    return np.concatenate(embs) if embs else np.zeros((0, 0), dtype=np.float32)


# ====================================================================== evaluation

MODEL_HELP = ("open_clip model name (rs-tiny, ViT-B-32, ...); optional with a --checkpoint whose open_clip_config.json "
              "(written beside every checkpoint of a training run) records it")


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


def load_bundle(model: str, checkpoint: str | None, device: torch.device, init_seed: int = 0,
                allow_torchscript: bool = False):
    """``create_clip`` with a local checkpoint, or a random init drawn with ``init_seed`` (so a chance baseline
    is the same on every run; the caller's RNG state is left untouched). A TorchScript checkpoint is refused
    unless ``allow_torchscript`` (loading it runs code from the file)."""
    from clip_pretrain.models import create_clip

    if checkpoint is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(init_seed)
            return create_clip(model, pretrained=None, device=device)
    path = Path(checkpoint).expanduser()
    if not path.exists():
        raise EvalError(f"{checkpoint}: checkpoint file not found")
    # a folder (run dir, hub snapshot) is resolved there
    return create_clip(model, pretrained=str(path), device=device, allow_torchscript=allow_torchscript)


def check_output_dir(output: str | Path) -> Path:
    """The output folder as a Path; an existing file there is an EvalError (before any model is loaded)."""
    out = Path(output).expanduser()
    if out.exists() and not out.is_dir():
        raise EvalError(f"--output {out}: exists and is not a folder")
    return out


def check_model_inputs(model: str, checkpoint: str | None) -> str:
    """Cheap checks of the model name and checkpoint path, before any eval set is embedded or model built.
    Returns the model to build: ``model``, or when it is empty the name recorded with the checkpoint
    (``open_clip_config.json`` beside it, see ``clip_pretrain.identity``); a ``model`` contradicting the record
    is an EvalError."""
    from clip_pretrain.identity import IdentityError, read_identity, resolve_model
    from clip_pretrain.models import check_model_name

    if checkpoint is not None and not Path(checkpoint).expanduser().exists():
        raise EvalError(f"{checkpoint}: checkpoint file not found")
    try:
        name = resolve_model(model or None, read_identity(checkpoint) if checkpoint else None, checkpoint or "")
    except IdentityError as exc:
        raise EvalError(str(exc)) from None
    check_model_name(name)
    return name


def check_images_present(eval_set: EvalSet, sample: int = 32) -> None:
    """A wrong image folder is the usual mistake with a caption json: when none of the first ``sample`` listed image
    files exists, stop before the model is loaded (a few missing files are skipped and counted later)."""
    files = [item.path for item in eval_set.items[:sample] if item.offset < 0]
    if files and not any(f.is_file() for f in files):
        raise EvalError(f"{eval_set.source}: none of the first {len(files)} listed images exists (first: {files[0]}); "
                        "pass the folder that holds them as --images")


def embed_eval_set(bundle, eval_set: EvalSet, device: torch.device, batch_size: int = 64, workers: int = 0):
    """(image_emb, text_emb, text_to_image, kept items, skipped) for an eval set; images that do not decode
    are left out together with their captions."""
    image_emb, kept, skipped = encode_images(bundle.model, bundle.preprocess_val, eval_set.items, device, batch_size, workers)
    kept_items = [eval_set.items[i] for i in kept.tolist()]
    texts = [c for item in kept_items for c in item.captions]
    text_to_image = np.asarray([i for i, item in enumerate(kept_items) for _ in item.captions], dtype=np.int64)
    text_emb = encode_texts(bundle.model, bundle.tokenizer, texts, device, max(batch_size, 256))
    return image_emb, text_emb, text_to_image, kept_items, skipped


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


# ====================================================================== HTML report


def _topk_small(queries: np.ndarray, database: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k for a handful of queries (score desc, id asc), without an index."""
    scores = queries @ database.T
    k = min(k, database.shape[0])
    out_s = np.empty((len(queries), k), dtype=np.float32)
    out_i = np.empty((len(queries), k), dtype=np.int64)
    for r, row in enumerate(scores):
        order = np.argsort(-row, kind="stable")[:k]
        out_s[r], out_i[r] = row[order], order
    return out_s, out_i


def thumbnail_data_uri(item: EvalItem, size: int = 112) -> str:
    try:
        from shards.report import jpeg_data_uri

        img = load_rgb(item).copy()
        img.thumbnail((size, size))
        return jpeg_data_uri(img, quality=80)
    except Exception:  # noqa: BLE001 - the report shows a blank for an image that no longer reads
        return ""


def _pick(n: int, count: int) -> list[int]:
    return sorted({int(x) for x in np.linspace(0, n - 1, num=min(count, n)).round()}) if n else []


def write_report(path: Path, metrics: dict, image_emb: np.ndarray, text_emb: np.ndarray, text_to_image: np.ndarray,
                 items: Sequence[EvalItem], n_queries: int = 10, top: int = 5) -> None:
    """Self-contained HTML: ~n text queries with their top images, ~n image queries with their top captions,
    hits marked. Thumbnails are inlined as base64 JPEGs."""
    texts = [c for it in items for c in it.captions]
    thumbs: dict[int, str] = {}

    def thumb(i: int) -> str:
        if i not in thumbs:
            thumbs[i] = thumbnail_data_uri(items[i])
        uri = thumbs[i]
        return f'<img src="{uri}" alt="">' if uri else '<div class="noimg">?</div>'

    esc = html.escape
    weights = metrics.get("model_source") or metrics.get("checkpoint") or "random init"

    def rank_of(row: np.ndarray, positives: np.ndarray) -> str:
        """1-based rank of the best positive; "a-b (tied)" when other items share its score (which of them a
        top k keeps is torch.topk's choice, see the module doc). The listings below order ties by index."""
        p = max(positives.tolist(), key=lambda q: row[q])
        first, tied = 1 + int(np.sum(row > row[p])), int(np.sum(row == row[p]))
        return f"{first}" if tied == 1 else f"{first}-{first + tied - 1} (tied)"

    rows = ["<tr>" + "".join(f"<th>{esc(k)}</th>" for k in metrics if "R@" in k or k == "mean_recall") + "</tr>",
            "<tr>" + "".join(f"<td>{metrics[k]:.2f}</td>" for k in metrics if "R@" in k or k == "mean_recall") + "</tr>"]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>Retrieval report</title><style>",
        "body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px;"
        "vertical-align:top}.hit{outline:4px solid #1a9850}.miss{outline:2px solid #ddd}.cell{display:inline-block;"
        "margin:4px;text-align:center;font-size:11px;width:120px;overflow-wrap:anywhere}.cap{padding:3px 6px;margin:2px 0}"
        ".cap.hit{background:#d9f0d3;outline:none}.noimg{width:112px;height:112px;background:#eee}img{max-width:112px}",
        "</style></head><body>",
        f"<h1>Retrieval report</h1><p>model <b>{esc(str(metrics.get('model')))}</b>, weights "
        f"<b class='source'>{esc(weights)}</b>; {metrics['n_images']} images, {metrics['n_texts']} texts; "
        f"eval set {esc(str(metrics.get('eval_set', {}).get('source')))}</p>",
        "<table>" + "".join(rows) + "</table>",
        f"<h2>Text &rarr; image (top {top}; green = the caption's image)</h2><table>",
    ]
    tq = _pick(len(texts), n_queries)
    if tq:
        scores, ids = _topk_small(text_emb[tq], image_emb, top)
        for r, j in enumerate(tq):
            cells = []
            for rank, (s, i) in enumerate(zip(scores[r], ids[r])):
                hit = int(i) == int(text_to_image[j])
                cells.append(f'<div class="cell"><div class="{"hit" if hit else "miss"}">{thumb(int(i))}</div>'
                             f"#{rank + 1} {s:.3f}{' &#10003;' if hit else ''}<br>{esc(items[int(i)].key)}</div>")
            rank = rank_of(image_emb @ text_emb[j], np.asarray([text_to_image[j]]))
            parts.append(f"<tr><td style='max-width:260px'>{esc(texts[j])}<br><small>image: "
                         f"{esc(items[int(text_to_image[j])].key)} (rank {rank})</small></td><td>{''.join(cells)}</td></tr>")
    parts.append(f"</table><h2>Image &rarr; text (top {top}; green = one of the image's captions)</h2><table>")
    iq = _pick(len(items), n_queries)
    if iq and len(texts):
        scores, ids = _topk_small(image_emb[iq], text_emb, top)
        for r, i in enumerate(iq):
            caps = []
            for rank, (s, j) in enumerate(zip(scores[r], ids[r])):
                hit = int(text_to_image[int(j)]) == i
                caps.append(f'<div class="cap{" hit" if hit else ""}">#{rank + 1} {s:.3f} '
                            f"{'&#10003; ' if hit else ''}{esc(texts[int(j)])}</div>")
            own = np.flatnonzero(text_to_image == i)
            rank = f"best caption at rank {rank_of(text_emb @ image_emb[i], own)}" if len(own) else "no captions"
            parts.append(f"<tr><td class='cell'>{thumb(i)}<br>{esc(items[i].key)}<br><small>{rank}</small></td>"
                         f"<td>{''.join(caps)}</td></tr>")
    parts.append("</table></body></html>")
    path.write_text("\n".join(parts), encoding="utf-8")
