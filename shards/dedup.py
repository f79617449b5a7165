"""p-Hash de-duplication (RemoteCLIP's rule: Hamming distance <= 2 on the 64-bit pHash), done exactly and fast.

Hashes are ``np.uint64`` arrays. Near-duplicate search uses faiss's multi-index hashing
(``IndexBinaryMultiHash``): the 64 bits are cut into ``segments`` whole segments and every segment value is a
hash-table key. Two hashes within distance ``d <= segments - 1`` agree on at least one whole segment
(pigeonhole: ``d`` differing bits can touch at most ``d`` segments), so the multi-index finds every such pair:
it is exact for ``threshold < segments`` (4 segments of 16 bits: exact up to threshold 3). For a larger
threshold it would miss pairs, so ``IndexBinaryFlat`` (exact, brute force in C++) is used instead, with a warning.

faiss findings (faiss-cpu 1.15.1, checked against numpy brute force; see tests/test_dedup.py):

* binary ``range_search`` is strict: it returns distances ``< radius``, for the flat and the multi-hash index alike.
  We search with ``radius = threshold + 1`` and, so that a version with inclusive semantics cannot widen the rule,
  keep only results with ``distance <= threshold`` afterwards.
* ``IndexBinaryMultiHash`` supports ``range_search``; with ``nhash * b == 64`` and ``nflip == 0`` it matched brute
  force exactly for every threshold < segments (segments 1, 2, 4, 8), and missed pairs beyond that, as predicted.
* byte order: a faiss binary vector is 8 uint8; the uint64 array is viewed as uint8 as is. The segment boundaries
  then fall on byte boundaries of the little-endian layout, which partitions the 64 bits all the same, and Hamming
  distance does not depend on byte order.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import faiss
import imagehash
import numpy as np
from PIL import Image

log = logging.getLogger(__name__)

MAX_MATCHES = 10
"""How many eval matches a :class:`Contamination` lists (nearest first); ``n_matches`` has the full count."""

_QUERY_BATCH = 1 << 16  # queries per range_search call: bounds the transient result memory
_BRUTE_CELLS = 1 << 18  # pairwise distances per brute-force chunk: 2 MiB of XOR stays in cache (faster than big chunks)


@dataclass(frozen=True)
class Duplicate:
    """Image ``removed`` is within the threshold of the earlier, kept image ``kept``, at Hamming ``distance``."""

    removed: int
    kept: int
    distance: int


@dataclass(frozen=True)
class Contamination:
    """Training image ``train`` is within the threshold of ``n_matches`` eval images; ``matches`` lists the
    nearest (eval index, distance), sorted by distance then eval index, at most :data:`MAX_MATCHES` of them."""

    train: int
    matches: list[tuple[int, int]]
    n_matches: int


# ---------------------------------------------------------------- hashing


def phash_u64(image: Image.Image) -> int:
    """``imagehash.phash(image)`` (hash_size 8) as an unsigned 64-bit int, so ``hex_of(h) == str(imagehash.phash(image))``."""
    bits = np.asarray(imagehash.phash(image).hash, dtype=bool).reshape(-1)
    if bits.size != 64:
        raise ValueError(f"expected a 64-bit pHash, got {bits.size} bits")
    return int.from_bytes(np.packbits(bits).tobytes(), "big")  # first bit is the most significant, as imagehash prints it


def image_phash(image: Image.Image, hash_side: int = 128) -> int:
    """The build's pHash: :func:`phash_u64` of the image box-reduced (``Image.reduce``, integer factor) to a
    shorter side of ``hash_side``..``2*hash_side-1`` px; ``hash_side=0`` hashes the full image.

    Why: imagehash resizes the whole image to 32x32 with LANCZOS, whose kernel grows with the reduction, so
    hashing cost ~2 ms of a 768 px image and ~40 ms of a 2048 px one, as much as decoding it. After a box
    reduction to >= 128 px the LANCZOS step is nearly free. On the 658 real and synthetic images we checked
    (shared RS samples, 768 and 1536 px scenes), 636 hashes were identical to imagehash on the full image,
    20 differed by 2 bits and 2 by 4. Training and evaluation images go through the same function, so
    exact and re-encoded copies still match as before.
    """
    factor = min(image.size) // hash_side if hash_side else 1
    return phash_u64(image.reduce(factor) if factor > 1 else image)


def hex_of(h: int) -> str:
    """The 16-digit hex form imagehash prints (and the build stores)."""
    return f"{int(h):016x}"


def hamming(a: int, b: int) -> int:
    """Hamming distance of two 64-bit hashes."""
    return (int(a) ^ int(b)).bit_count()


# ---------------------------------------------------------------- helpers


def _as_hashes(x: np.ndarray | list[int]) -> np.ndarray:
    """A contiguous 1-D uint64 array (signed int64 input is reinterpreted bit for bit)."""
    arr = np.asarray(x)
    if arr.dtype == np.int64:
        arr = arr.view(np.uint64)
    arr = np.ascontiguousarray(arr, dtype=np.uint64)
    if arr.ndim != 1:
        raise ValueError(f"hashes must be a 1-D array, got shape {arr.shape}")
    return arr


def _check(threshold: int, segments: int) -> None:
    if not 0 <= threshold <= 64:
        raise ValueError(f"threshold must be in 0..64, got {threshold}")
    if segments not in (1, 2, 4, 8):
        raise ValueError(f"segments must cut 64 bits into whole bytes (1, 2, 4 or 8), got {segments}")


def _codes(x: np.ndarray) -> np.ndarray:
    """faiss binary vectors: each uint64 viewed as its 8 bytes."""
    return x.view(np.uint8).reshape(-1, 8)


def _index(threshold: int, segments: int) -> faiss.IndexBinary:
    """The multi-index when it is exact for ``threshold`` (threshold < segments), else the flat index."""
    if threshold < segments:
        return faiss.IndexBinaryMultiHash(64, segments, 64 // segments)
    log.warning(
        "dedup threshold %d >= segments %d: a %d-segment multi-index would miss pairs (pigeonhole holds only for "
        "threshold <= segments - 1), so the exact but much slower IndexBinaryFlat is used",
        threshold, segments, segments,
    )
    return faiss.IndexBinaryFlat(64)


def _range_pairs(base: np.ndarray, queries: np.ndarray, threshold: int, segments: int, lower_only: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All (query, base, distance) with distance <= threshold; ``lower_only`` keeps base < query (self-search)."""
    index = _index(threshold, segments)
    index.add(_codes(base))
    qs, rs, ds = [], [], []
    codes = _codes(queries)
    for start in range(0, len(queries), _QUERY_BATCH):
        lims, dist, ids = index.range_search(codes[start:start + _QUERY_BATCH], threshold + 1)  # strict: d < radius
        q = np.repeat(np.arange(start, start + len(lims) - 1, dtype=np.int64), np.diff(lims).astype(np.int64))
        d = dist.astype(np.int64)
        keep = d <= threshold  # no-op with strict semantics; guards against an inclusive faiss
        if lower_only:
            keep &= ids < q
        qs.append(q[keep])
        rs.append(ids[keep].astype(np.int64))
        ds.append(d[keep])
    if not qs:
        empty = np.zeros(0, np.int64)
        return empty, empty, empty
    return np.concatenate(qs), np.concatenate(rs), np.concatenate(ds)


def _greedy(n: int, q: np.ndarray, r: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sequential greedy over items 0..n-1 given all pairs (q, r, d) with r < q.

    Returns (kept mask, removed_by, distance): item q is removed iff some earlier kept item r is within the
    threshold; removed_by is the smallest such r. One pass over the pairs, sorted by (q, r).
    """
    kept = np.ones(n, dtype=bool)
    removed_by = np.full(n, -1, dtype=np.int64)
    dist = np.zeros(n, dtype=np.int64)
    if len(q) == 0:
        return kept, removed_by, dist
    order = np.lexsort((r, q))
    qs, rs, ds = q[order].tolist(), r[order].tolist(), d[order].tolist()
    kept_l = [True] * n
    i, p = 0, len(qs)
    while i < p:
        item, j = qs[i], i
        while j < p and qs[j] == item:
            j += 1
        for k in range(i, j):  # earlier neighbours, smallest first: all already decided
            if kept_l[rs[k]]:
                kept_l[item] = False
                removed_by[item], dist[item] = rs[k], ds[k]
                break
        i = j
    kept[:] = kept_l
    return kept, removed_by, dist


# ---------------------------------------------------------------- within-set duplicates


def find_duplicates(hashes: np.ndarray, threshold: int = 2, segments: int = 4) -> list[Duplicate]:
    """Near-duplicates to remove, sorted by the removed image's index.

    Rule: the inputs are in priority order (the build passes its deterministic input order: sources in
    command-line order, then sorted paths). Walking i = 0..N-1, image i is removed if it lies within
    ``threshold`` (inclusive) of an EARLIER image that was KEPT; ``kept`` is the earliest such kept image and
    ``distance`` their Hamming distance. This is exactly sequential greedy de-duplication against the kept set
    (an image close only to removed images stays).

    Identical hashes form a clique, so the search runs over the unique hash values only (ranked by first
    occurrence); the result is then expanded: a later copy of a value is removed in favour of the image its
    first occurrence was removed for, or of that first occurrence itself when it was kept (distance 0). 1000
    blank images with one hash thus cost one search entry, not a million pairs.
    """
    _check(threshold, segments)
    x = _as_hashes(hashes)
    n = len(x)
    if n == 0:
        return []
    ordered = np.sort(x)
    if not (ordered[1:] == ordered[:-1]).any():  # no repeated value (the usual case): search the hashes as they are
        q, r, d = _range_pairs(x, x, threshold, segments, lower_only=True)
        kept, removed_by, dist = _greedy(n, q, r, d)
        out = np.flatnonzero(~kept)
        return [Duplicate(int(i), int(k), int(dd)) for i, k, dd in zip(out.tolist(), removed_by[out].tolist(), dist[out].tolist())]
    uniq, first, inverse = np.unique(x, return_index=True, return_inverse=True)
    by_first = np.argsort(first, kind="stable")  # rank -> unique id, rank order = first-occurrence order
    rank_of = np.empty_like(by_first)
    rank_of[by_first] = np.arange(len(by_first))
    values, first_idx = uniq[by_first], first[by_first]
    q, r, d = _range_pairs(values, values, threshold, segments, lower_only=True)
    kept, removed_by, dist = _greedy(len(values), q, r, d)

    rank = rank_of[inverse.reshape(-1)]
    image_kept = kept[rank] & (first_idx[rank] == np.arange(n))
    value_kept = kept[rank]
    partner = np.where(value_kept, first_idx[rank], first_idx[np.maximum(removed_by[rank], 0)])
    distance = np.where(value_kept, 0, dist[rank])
    out = np.flatnonzero(~image_kept)
    return [Duplicate(int(i), int(k), int(dd)) for i, k, dd in zip(out.tolist(), partner[out].tolist(), distance[out].tolist())]


# ---------------------------------------------------------------- train vs eval contamination


def _group_rows(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unique values, and the original indices grouped by value: ``members[starts[u]:starts[u+1]]`` ascending."""
    uniq, inverse = np.unique(values, return_inverse=True)
    inverse = inverse.reshape(-1)
    members = np.argsort(inverse, kind="stable")
    starts = np.concatenate([[0], np.cumsum(np.bincount(inverse, minlength=len(uniq)))])
    return uniq, members, starts


def find_contaminated(
    train: np.ndarray, evals: np.ndarray, threshold: int = 2, segments: int = 4, max_matches: int = MAX_MATCHES
) -> list[Contamination]:
    """Every training image within ``threshold`` (inclusive) of ANY eval image, sorted by train index.

    Each lists its matching eval images nearest first (ties by eval index), at most ``max_matches``, with the
    total in ``n_matches``. Both sides are collapsed to unique hash values before the search (eval side indexed,
    train side queried) and expanded afterwards.
    """
    _check(threshold, segments)
    tr, ev = _as_hashes(train), _as_hashes(evals)
    if len(tr) == 0 or len(ev) == 0:
        return []
    t_uniq, t_members, t_starts = _group_rows(tr)
    e_uniq, e_members, e_starts = _group_rows(ev)
    q, r, d = _range_pairs(e_uniq, t_uniq, threshold, segments, lower_only=False)
    if len(q) == 0:
        return []
    order = np.lexsort((r, q))
    q, r, d = q[order], r[order], d[order]
    bounds = np.flatnonzero(np.diff(q)) + 1
    out: list[Contamination] = []
    for qs, rs, ds in zip(np.split(q, bounds), np.split(r, bounds), np.split(d, bounds)):
        cands: list[tuple[int, int]] = []
        total = 0
        for u, dist in zip(rs.tolist(), ds.tolist()):
            group = e_members[e_starts[u]:e_starts[u + 1]]
            total += len(group)
            cands.extend((dist, int(e)) for e in group[:max_matches].tolist())  # the rest of a group cannot rank higher
        cands.sort()
        matches = [(e, dist) for dist, e in cands[:max_matches]]
        t = int(qs[0])
        for i in t_members[t_starts[t]:t_starts[t + 1]].tolist():
            out.append(Contamination(int(i), list(matches), total))
    out.sort(key=lambda c: c.train)
    return out


# ---------------------------------------------------------------- brute-force references


def _brute_pairs(base: np.ndarray, queries: np.ndarray, threshold: int, lower_only: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All (query, base, distance) with distance <= threshold by XOR + popcount, in cache-sized chunks."""
    nb = max(len(base), 1)
    rows = max(1, _BRUTE_CELLS // nb)
    qs, rs, ds = [], [], []
    for start in range(0, len(queries), rows):
        stop = min(start + rows, len(queries))
        cols = min(stop, len(base)) if lower_only else len(base)  # self-search: only columns < row matter
        if cols == 0:
            continue
        dist = np.bitwise_count(queries[start:stop, None] ^ base[None, :cols])
        qi, ri = np.nonzero(dist <= threshold)
        if lower_only:  # drop the diagonal and the upper triangle after the (sparse) hits, not on the dense block
            keep = ri < qi + start
            qi, ri = qi[keep], ri[keep]
        qs.append(qi.astype(np.int64) + start)
        rs.append(ri.astype(np.int64))
        ds.append(dist[qi, ri].astype(np.int64))
    if not qs:
        empty = np.zeros(0, np.int64)
        return empty, empty, empty
    return np.concatenate(qs), np.concatenate(rs), np.concatenate(ds)


def brute_force_duplicates(hashes: np.ndarray, threshold: int = 2) -> list[Duplicate]:
    """Reference for :func:`find_duplicates`: every pair by numpy XOR + popcount, no collapsing, same greedy rule."""
    x = _as_hashes(hashes)
    q, r, d = _brute_pairs(x, x, threshold, lower_only=True)
    kept, removed_by, dist = _greedy(len(x), q, r, d)
    return [Duplicate(int(i), int(removed_by[i]), int(dist[i])) for i in np.flatnonzero(~kept).tolist()]


def brute_force_contaminated(train: np.ndarray, evals: np.ndarray, threshold: int = 2, max_matches: int = MAX_MATCHES) -> list[Contamination]:
    """Reference for :func:`find_contaminated`: every train x eval distance by numpy XOR + popcount."""
    tr, ev = _as_hashes(train), _as_hashes(evals)
    if len(tr) == 0 or len(ev) == 0:
        return []
    q, r, d = _brute_pairs(ev, tr, threshold, lower_only=False)
    order = np.lexsort((r, d, q))  # by train, then distance, then eval index
    q, r, d = q[order], r[order], d[order]
    bounds = np.flatnonzero(np.diff(q)) + 1
    return [
        Contamination(int(qs[0]), list(zip(rs[:max_matches].tolist(), ds[:max_matches].tolist())), len(qs))
        for qs, rs, ds in zip(np.split(q, bounds), np.split(r, bounds), np.split(d, bounds))
        if len(qs)
    ]
