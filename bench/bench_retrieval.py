"""Top-k retrieval search: faiss IndexFlatIP (what ``recall_at_k`` uses) vs a plain torch matmul + topk.

    python bench/bench_retrieval.py [--n-queries 100000] [--n-db 500000] [--dim 512] [--k 10] [--quick] [--json out.json]

Random unit-norm float32 embeddings (queries and database drawn independently, seed fixed). Both sides find
the top ``k`` database rows by inner product for every query, with bounded memory:

* faiss: ``clip_pretrain.evaluate.recall.FlatIPSearcher`` (IndexFlatIP, CPU here; a GPU index when faiss has
  GPUs) searched ``--search-batch`` queries at a time, ids re-sorted by (score desc, id asc) (``recall_at_k``
  searches ``max(ks) + 1`` this way and settles ties at a cut-off with torch.topk, see its module doc);
* torch: per block of ``--torch-batch`` queries, the database in chunks of ``--db-chunk`` rows: matmul, topk of
  the chunk, then topk of the merged candidates; the largest temporary is torch-batch x db-chunk floats.

Both use the same number of threads (``--threads``, default all cores). Times are wall-clock
(time.perf_counter), data generation excluded, one run each; faiss time includes building the index. The
results are compared row by row: identical id lists, and, where they differ, whether the scores agree to
1e-5 (a near-tie that float32 rounding can order either way) -- anything else is a failure (exit 1).
The default size (100k x 500k x 512 = 5.1e13 multiply-adds x2) needs a few minutes on a many-core CPU or a
GPU; on a 2-core CPU use --quick (2k x 50k) or a middle size.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import faiss  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from clip_pretrain.evaluate.recall import FlatIPSearcher, faiss_gpu_available  # noqa: E402


def random_unit(n: int, dim: int, seed: int, chunk: int = 65536) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), dtype=np.float32)
    for s in range(0, n, chunk):
        block = rng.standard_normal((min(chunk, n - s), dim), dtype=np.float32)
        out[s:s + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def faiss_topk(queries: np.ndarray, db: np.ndarray, k: int, batch: int) -> tuple[np.ndarray, np.ndarray]:
    searcher = FlatIPSearcher(db, use_gpu=None)
    scores = np.empty((len(queries), k), dtype=np.float32)
    ids = np.empty((len(queries), k), dtype=np.int64)
    for s in range(0, len(queries), batch):
        scores[s:s + batch], ids[s:s + batch] = searcher.search(queries[s:s + batch], k)
    return scores, ids


def torch_topk(queries: np.ndarray, db: np.ndarray, k: int, batch: int, db_chunk: int,
               device: str) -> tuple[np.ndarray, np.ndarray]:
    dbt = torch.from_numpy(db).to(device)
    scores = np.empty((len(queries), k), dtype=np.float32)
    ids = np.empty((len(queries), k), dtype=np.int64)
    with torch.no_grad():
        for s in range(0, len(queries), batch):
            q = torch.from_numpy(queries[s:s + batch]).to(device)
            cand_v, cand_i = [], []
            for c in range(0, len(dbt), db_chunk):
                block = q @ dbt[c:c + db_chunk].T
                v, i = block.topk(min(k, block.shape[1]), dim=1)
                cand_v.append(v)
                cand_i.append(i + c)
            v, pos = torch.cat(cand_v, dim=1).topk(k, dim=1)
            scores[s:s + batch] = v.cpu().numpy()
            ids[s:s + batch] = torch.gather(torch.cat(cand_i, dim=1), 1, pos).cpu().numpy()
    return scores, ids


def compare(fs: np.ndarray, fi: np.ndarray, ts: np.ndarray, ti: np.ndarray, tol: float = 1e-5) -> dict:
    same_ids = (np.sort(fi, axis=1) == np.sort(ti, axis=1)).all(axis=1)
    score_diff = np.abs(fs - ts).max(axis=1)  # both sorted by score descending
    bad = ~same_ids & (score_diff > tol)
    return {
        "rows": int(len(fi)),
        "rows_identical_id_sets": int(same_ids.sum()),
        "rows_differing_only_by_near_ties": int((~same_ids & ~bad).sum()),
        "rows_disagreeing": int(bad.sum()),
        "max_score_diff": float(np.abs(fs - ts).max()),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-queries", type=int, default=100_000)
    p.add_argument("--n-db", type=int, default=500_000)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--quick", action="store_true", help="2,000 queries x 50,000 database rows (unless sizes are given)")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="threads for both faiss and torch")
    p.add_argument("--search-batch", type=int, default=16384, help="queries per faiss search call")
    p.add_argument("--torch-batch", type=int, default=1024, help="queries per torch matmul block")
    p.add_argument("--db-chunk", type=int, default=65536, help="database rows per torch matmul block")
    p.add_argument("--device", default="cpu", help="torch device for the matmul side (cpu or cuda)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, help="write the results here too")
    args = p.parse_args(argv)
    given = {a.split("=")[0] for a in (argv if argv is not None else sys.argv[1:])}
    if args.quick:
        if "--n-queries" not in given:
            args.n_queries = 2_000
        if "--n-db" not in given:
            args.n_db = 50_000
    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)

    queries = random_unit(args.n_queries, args.dim, args.seed)
    db = random_unit(args.n_db, args.dim, args.seed + 1)
    madds = args.n_queries * args.n_db * args.dim
    print(f"{args.n_queries:,} queries x {args.n_db:,} database x dim {args.dim}, k={args.k}, {args.threads} threads, "
          f"faiss {faiss.__version__} ({'GPU' if faiss_gpu_available() else 'CPU'}), torch {torch.__version__} ({args.device})",
          flush=True)

    t0 = time.perf_counter()
    fs, fi = faiss_topk(queries, db, args.k, args.search_batch)
    t_faiss = time.perf_counter() - t0
    print(f"faiss IndexFlatIP : {t_faiss:8.2f} s  ({2 * madds / t_faiss / 1e9:6.1f} GFLOP/s)", flush=True)
    t0 = time.perf_counter()
    ts, ti = torch_topk(queries, db, args.k, args.torch_batch, args.db_chunk, args.device)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    t_torch = time.perf_counter() - t0
    print(f"torch matmul+topk : {t_torch:8.2f} s  ({2 * madds / t_torch / 1e9:6.1f} GFLOP/s)", flush=True)
    ratio = t_torch / t_faiss
    print(f"torch / faiss     : {ratio:8.2f}x ({'faiss' if ratio > 1 else 'torch'} faster)")
    agreement = compare(fs, fi, ts, ti)
    print("agreement         :", json.dumps(agreement))
    result = {
        "n_queries": args.n_queries, "n_db": args.n_db, "dim": args.dim, "k": args.k, "threads": args.threads,
        "faiss_s": round(t_faiss, 3), "torch_s": round(t_torch, 3), "torch_over_faiss": round(ratio, 3),
        "agreement": agreement, "faiss": faiss.__version__, "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
    }
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if agreement["rows_disagreeing"]:
        print("FAIL: faiss and torch top-k disagree beyond near-ties", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
