"""p-Hash de-duplication speed and exactness on one core.

    python bench/bench_dedup.py [--n 1000000] [--quick] [--json out.json]

(a) find_duplicates on N random 64-bit hashes with planted near-duplicates: 1% copies of an earlier (unplanted)
    hash with 0-2 bit flips, which must be found, and 0.2% at 3-4 flips, which must not be flagged at threshold 2.
    Goal: < 30 s for N = 1,000,000 on one core.
(b) find_duplicates / find_contaminated equal to the numpy brute force on a subset.
(c) speed-up over the vectorised numpy brute force (XOR + popcount, chunked) at 100k hashes. Goal: >= 50x.
(d) find_contaminated, N train vs 10k eval hashes.

Single core: faiss is limited to one OpenMP thread; the numpy operations used (XOR, bitwise_count, sort, unique)
are single-threaded anyway. Times are wall-clock (time.perf_counter), data generation excluded; one run each, except the fast side of (c):
median of 3 after one warm-up call (its first call pays faiss's one-off allocations, ~0.08 s). The brute force
side runs once (it takes ~10 s; its run-to-run spread is a few %).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import faiss  # noqa: E402
import numpy as np  # noqa: E402

from shards.dedup import (  # noqa: E402
    brute_force_contaminated,
    brute_force_duplicates,
    find_contaminated,
    find_duplicates,
)

THRESHOLD, SEGMENTS = 2, 4


def flip(values: np.ndarray, counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each value with ``counts[i]`` distinct random bits flipped."""
    out = values.copy()
    for i, k in enumerate(counts.tolist()):
        mask = 0
        for bit in rng.choice(64, size=k, replace=False).tolist():
            mask |= 1 << bit
        out[i] ^= np.uint64(mask)
    return out


def planted_hashes(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random hashes; returns (hashes, near indices (0-2 flips of an earlier unplanted hash), far indices (3-4 flips))."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 2**64 - 1, size=n, dtype=np.uint64, endpoint=True)
    n_near, n_far = n // 100, n // 500
    chosen = rng.choice(np.arange(n // 10, n), size=n_near + n_far, replace=False)  # copies sit after their source
    near, far = np.sort(chosen[:n_near]), np.sort(chosen[n_near:])
    planted = np.zeros(n, bool)
    planted[chosen] = True
    unplanted = np.flatnonzero(~planted)
    for idx, lo, hi in ((near, 0, 2), (far, 3, 4)):
        # source: a random unplanted index before the copy (the first n/10 are never planted)
        limit = np.searchsorted(unplanted, idx)
        sources = unplanted[(rng.random(len(idx)) * limit).astype(np.int64)]
        x[idx] = flip(x[sources], rng.integers(lo, hi + 1, size=len(idx)), rng)
    return x, near, far


def timed(fn, *args):  # noqa: ANN001, ANN202
    start = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="hashes in (a) and train hashes in (d)")
    parser.add_argument("--quick", action="store_true", help="small sizes, a smoke run")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    n = 50_000 if args.quick else args.n
    n_subset, n_speed, n_eval = (5_000, 10_000, 1_000) if args.quick else (20_000, 100_000, 10_000)
    faiss.omp_set_num_threads(1)
    results: dict = {
        "machine": {"cpu": platform.processor() or platform.machine(), "python": platform.python_version(),
                    "numpy": np.__version__, "faiss": faiss.__version__, "faiss_threads": 1},
        "threshold": THRESHOLD, "segments": SEGMENTS,
    }

    # (a) scale
    x, near, far = planted_hashes(n)
    dups, t_a = timed(find_duplicates, x, THRESHOLD, SEGMENTS)
    removed = np.array([d.removed for d in dups], dtype=np.int64)
    assert all(bin(int(x[d.removed]) ^ int(x[d.kept])).count("1") == d.distance <= THRESHOLD for d in dups)
    found = int(np.isin(near, removed).sum())
    far_flagged = int(np.isin(far, removed).sum())
    extra = int((~np.isin(removed, near)).sum())
    results["a"] = {"n": n, "seconds": t_a, "removed": len(dups), "planted_near": len(near), "found": found,
                    "planted_far": len(far), "far_flagged": far_flagged, "other_removed": extra}

    # (b) exactness on a subset (+ contamination: a train subset vs eval hashes drawn from it)
    rng = np.random.default_rng(1)
    sub = x[:n_subset]
    evals = flip(sub[rng.choice(n_subset, size=n_eval // 10, replace=False)], rng.integers(0, 4, size=n_eval // 10), rng)
    evals = np.concatenate([evals, rng.integers(0, 2**64 - 1, size=n_eval - len(evals), dtype=np.uint64, endpoint=True)])
    same_dup = find_duplicates(sub, THRESHOLD, SEGMENTS) == brute_force_duplicates(sub, THRESHOLD)
    same_con = find_contaminated(sub, evals, THRESHOLD, SEGMENTS) == brute_force_contaminated(sub, evals, THRESHOLD)
    results["b"] = {"n": n_subset, "n_eval": n_eval, "duplicates_identical": same_dup, "contaminated_identical": same_con}

    # (c) speed-up over brute force
    y = x[:n_speed].copy()
    find_duplicates(y, THRESHOLD, SEGMENTS)  # warm-up: faiss's first call pays one-off allocation costs
    fast_runs = [timed(find_duplicates, y, THRESHOLD, SEGMENTS) for _ in range(3)]
    fast, t_fast = fast_runs[0][0], float(np.median([t for _, t in fast_runs]))
    slow, t_slow = timed(brute_force_duplicates, y, THRESHOLD)
    results["c"] = {"n": n_speed, "find_duplicates_s": t_fast, "brute_force_s": t_slow, "speedup": t_slow / t_fast,
                    "identical": fast == slow}

    # (d) contamination: n train vs n_eval eval hashes, 1% of them near copies of train hashes
    n_copy = n_eval // 100
    ev = rng.integers(0, 2**64 - 1, size=n_eval, dtype=np.uint64, endpoint=True)
    ev[:n_copy] = flip(x[rng.choice(n, size=n_copy, replace=False)], rng.integers(0, THRESHOLD + 1, size=n_copy), rng)
    hits, t_d = timed(find_contaminated, x, ev, THRESHOLD, SEGMENTS)
    assert all(bin(int(x[h.train]) ^ int(ev[e])).count("1") == dist <= THRESHOLD for h in hits for e, dist in h.matches)
    results["d"] = {"n_train": n, "n_eval": n_eval, "seconds": t_d, "contaminated_train": len(hits), "planted_eval_copies": n_copy}

    a, b, c, d = results["a"], results["b"], results["c"], results["d"]
    rows = [
        ("(a) find_duplicates", f"{a['n']:,} hashes", f"{a['seconds']:.2f} s",
         f"near found {a['found']}/{a['planted_near']}, far flagged {a['far_flagged']}/{a['planted_far']}, other removed {a['other_removed']}"),
        ("(b) equal to brute force", f"{b['n']:,} (+{b['n_eval']:,} eval)", "-",
         f"duplicates identical: {str(b['duplicates_identical']).lower()}, contaminated identical: {str(b['contaminated_identical']).lower()}"),
        ("(c) find_duplicates", f"{c['n']:,} hashes", f"{c['find_duplicates_s']:.3f} s", ""),
        ("(c) brute force (numpy)", f"{c['n']:,} hashes", f"{c['brute_force_s']:.2f} s",
         f"speed-up {c['speedup']:.0f}x, identical: {str(c['identical']).lower()}"),
        ("(d) find_contaminated", f"{d['n_train']:,} x {d['n_eval']:,}", f"{d['seconds']:.2f} s",
         f"{d['contaminated_train']} train flagged ({d['planted_eval_copies']} eval hashes are 0-2 flip copies of train hashes; "
         "extra hits are train near-duplicates of those)"),
    ]
    print(f"p-Hash dedup, threshold {THRESHOLD}, {SEGMENTS} segments, 1 core ({results['machine']['cpu']}, faiss {faiss.__version__})")
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for r in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(r[:3], widths)) + "  " + r[3])
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
