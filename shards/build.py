"""The shard build: read -> (hash + caption + encode) -> dedup -> write -> report, in four passes.

Passes, each restartable and each leaving a marker in ``OUTPUT/_work``:

1. ``hash`` (per node): workers decode every image once, check boxes, caption, p-Hash and encode it; the
   main process appends the results to staged tar parts and a ``records.jsonl`` (one line per record,
   ok or skipped). A node takes the records whose global index ``i % num_nodes == node_rank``.
2. ``dedup`` (one job): all nodes' hashes (8 bytes an image) + the evaluation sets' hashes -> the images
   to remove, ``duplicates.json`` and ``contaminated.json``.
3. ``write`` (per node): kept samples in global index order are numbered; shard ``s`` holds ordinals
   ``[s*N, (s+1)*N)``, and node ``r`` writes the shards with ``s % num_nodes == r`` from the staged bytes.
4. ``finalize`` (one job): ``manifest.json``, ``sizes.json``, ``report.json``, ``issues.jsonl`` and the
   HTML report; the staged parts are removed unless ``writer.keep_work``.

On one machine ``stage="all"`` runs the four in a row. "First" in de-duplication means the lowest
global index: sources in the order given on the command line, then each reader's sorted order.
"""

from __future__ import annotations

import io
import json
import logging
import multiprocessing as mp
import platform
import shutil
import time
from collections import Counter, defaultdict, deque
from pathlib import Path
from typing import Iterator

import numpy as np
from tqdm import tqdm

from rs_common.config import to_dict
from rs_common.errors import SampleSkip
from rs_common.files import atomic_write_json, is_under
from rs_common.formats.shard_sample import MANIFEST, SHARD_PATTERN
from rs_common.guards import LOCK_NAME, RunLock
from rs_common.imageio import configure_pillow
from shards import __version__
from shards.build_config import BuildConfig
from shards.dedup import find_contaminated, find_duplicates, image_phash
from shards.imageio import load_image
from shards.output_folder import check_output, prepare_output
from shards.plan import STAGES, BuildPlan, InputSpec  # noqa: F401 - callers build plans with InputSpec from here
from shards.readers import check_input, read_records
from shards.readers.eval_sets import check_eval_set, iter_eval_images
from shards.record import DatasetIssue, Record
from shards.sample import Sample, sample_json_bytes
from shards.tile_samples import build_samples
from shards.writer import MemberRef, StagedReader, StagingWriter, write_shard

log = logging.getLogger("shards.build")

# ---------------------------------------------------------------- pass 1: hash, caption, encode, stage


def iter_indexed_records(plan: BuildPlan, dataset_issues: list[DatasetIssue] | None = None) -> Iterator[tuple[int, Record]]:
    """All records of all inputs with their global index (the de-duplication priority); problems that belong to
    no image go to ``dataset_issues``."""
    index = 0
    for spec in plan.inputs:
        for item in read_records(spec.fmt, spec.path, spec.name, plan.cfg):
            if isinstance(item, DatasetIssue):
                if dataset_issues is not None:
                    dataset_issues.append(item)
                continue
            yield index, item
            index += 1


def worker_pool(cfg: BuildConfig):
    """A process pool from a clean ``forkserver``, not ``fork``: a process that already ran OpenCV (the demo
    generator, a notebook) holds its thread pool's locks, and a forked child calling OpenCV then hangs forever."""
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["shards.build"])  # the server imports once; each worker forks ready to go
    return ctx.Pool(cfg.workers, initializer=_init_worker, initargs=(cfg,))


class _Worker:
    """The settings a worker process got from the pool initializer: sent once, not with every task."""

    cfg: BuildConfig | None = None


def _init_worker(cfg: BuildConfig) -> None:
    import cv2

    cv2.setNumThreads(1)
    configure_pillow(cfg.image)
    _Worker.cfg = cfg


def _build_chunk(chunk: list[tuple[int, Record]]) -> list[Sample]:
    return [sample for index, record in chunk for sample in build_samples(index, record, _Worker.cfg)]


def chunked(items: Iterator, size: int) -> Iterator[list]:
    chunk: list = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def bounded_imap(pool, fn, items, max_in_flight: int, chunk: int = 8) -> Iterator:
    """Ordered ``pool.imap`` over chunks of ``chunk`` items that keeps at most ``max_in_flight`` chunks queued.

    ``Pool.imap`` drains its input eagerly and buffers every finished result, so on a large dataset it
    holds all records (and, when the writer lags, their encoded images) in memory; this does not. ``fn``
    takes a list of items and returns a list of results; chunks amortise the per-task IPC.
    """
    pending: deque = deque()
    for part in chunked(iter(items), chunk):
        pending.append(pool.apply_async(fn, (part,)))
        if len(pending) >= max_in_flight:
            yield from pending.popleft().get()
    while pending:
        yield from pending.popleft().get()


def map_samples(items: Iterator[tuple[int, Record]], cfg: BuildConfig) -> Iterator[Sample]:
    """build_samples over the records (one sample each, or one per tile of a tiled scene), in order, in
    ``cfg.workers`` processes (0 = this process)."""
    if cfg.workers == 0:
        _init_worker(cfg)
        yield from (sample for index, record in items for sample in build_samples(index, record, cfg))
        return
    # a tiled scene comes back as all its tiles' JPEGs: with tiling on, one scene a task and fewer in flight
    chunk, in_flight = (1, 2 * cfg.workers) if cfg.tile.size else (8, 4 * cfg.workers)
    with worker_pool(cfg) as pool:
        yield from bounded_imap(pool, _build_chunk, items, max_in_flight=in_flight, chunk=chunk)


def sample_line(sample: Sample, refs: dict[str, MemberRef] | None) -> dict:
    line = {"index": sample.index, "key": sample.key, "source": sample.source, "path": sample.path, "status": sample.status}
    if sample.tile is not None:
        line["tile"] = sample.tile
    if sample.status == "ok":
        line.update(phash=f"{sample.phash:016x}", members={k: r.to_json() for k, r in refs.items()}, classes=sample.classes)
    else:
        line.update(reason=sample.reason, message=sample.message)
    if sample.object_counts:
        line["objects"] = sample.object_counts
    if sample.issues:
        line["issues"] = [{"reason": i.reason, "message": i.message} for i in sample.issues]
    return line


def run_hash_pass(plan: BuildPlan) -> None:
    node_dir = plan.work / f"node-{plan.node_rank:04d}"
    done = node_dir / "DONE"
    if done.exists():
        log.info("hash pass of node %d already done, skipping", plan.node_rank)
        return
    if node_dir.exists():
        shutil.rmtree(node_dir)  # an interrupted pass restarts from scratch: parts are not trusted
    node_dir.mkdir(parents=True)
    dataset_issues: list[DatasetIssue] = []
    mine = ((i, r) for i, r in iter_indexed_records(plan, dataset_issues) if i % plan.num_nodes == plan.node_rank)
    staging = StagingWriter(node_dir)
    counts: Counter = Counter()
    start = time.perf_counter()
    with open(node_dir / "records.jsonl", "w") as lines:
        bar = tqdm(map_samples(mine, plan.cfg), desc=f"hash+encode (node {plan.node_rank})", unit="img", disable=not plan.progress)
        for sample in bar:
            refs = None
            if sample.status == "ok":
                refs = staging.add(sample.key, {"jpg": sample.jpg, "txt": sample.txt.encode("utf-8"), "json": sample_json_bytes(sample)})
            counts[sample.status] += 1
            lines.write(json.dumps(sample_line(sample, refs), ensure_ascii=False) + "\n")
    staging.close()
    if plan.node_rank == 0:  # every node reads every annotation; node 0 alone keeps what belongs to no image
        atomic_write_json(node_dir / "dataset_issues.json",
                          [{"source": d.source, "reason": d.reason, "message": d.message, "objects": d.objects} for d in dataset_issues])
    seconds = time.perf_counter() - start
    atomic_write_json(done, {"counts": dict(counts), "seconds": round(seconds, 3)})


# ---------------------------------------------------------------- pass 2: global dedup


def load_records(plan: BuildPlan) -> list[dict]:
    """Every node's records.jsonl, sorted by global index. Missing nodes are an error naming them."""
    missing = [r for r in range(plan.num_nodes) if not (plan.work / f"node-{r:04d}" / "DONE").exists()]
    if missing:
        raise RuntimeError(f"hash pass not finished for node(s) {missing} in {plan.work}; run --stage hash there first")
    rows: list[dict] = []
    for rank in range(plan.num_nodes):
        with open(plan.work / f"node-{rank:04d}" / "records.jsonl") as fh:
            for line in fh:
                row = json.loads(line)
                row["node"] = rank
                rows.append(row)
    rows.sort(key=lambda r: (r["index"], r.get("tile", -1)))
    return rows


def row_id(row: dict) -> str:
    """A sample's id in dedup.json: its record's global index, ``index.tile`` for a tile of a scene."""
    return f"{row['index']}.{row['tile']}" if "tile" in row else str(row["index"])


def load_dataset_issues(plan: BuildPlan) -> list[dict]:
    path = plan.work / "node-0000" / "dataset_issues.json"
    return json.loads(path.read_text()) if path.is_file() else []


def check_unique_keys(rows: list[dict]) -> None:
    """Two samples with one key would be two files of one name in a tar (webdataset refuses the shard, other
    readers keep one): stop before any shard is written, naming both."""
    first: dict[str, dict] = {}
    for row in rows:
        other = first.setdefault(row["key"], row)
        if other is not row:
            raise RuntimeError(f"two samples would share the key {row['key']!r}: {other['path']} ({other['source']}) and "
                               f"{row['path']} ({row['source']}); rename one of the files")


def _hash_eval_images(paths: list[tuple[Path, Path]]) -> list[tuple[str, int | None, str | None]]:
    cfg = _Worker.cfg
    out = []
    for path, root in paths:
        if not cfg.files.allow_outside_root and not is_under(path, root):
            out.append((str(path), None, "path_outside_root"))  # never read a file outside the set's root
            continue
        try:
            out.append((str(path), image_phash(load_image(path, cfg.image).rgb, cfg.dedup.hash_side), None))
        except SampleSkip as skip:
            out.append((str(path), None, skip.reason))
    return out


def hash_eval_sets(plan: BuildPlan) -> tuple[list[str], np.ndarray, Counter]:
    """p-Hashes of every image of the ``--dedup-against`` sets (same decoding as training images)."""
    paths = [p for root in plan.dedup_against for p in iter_eval_images(root, plan.cfg)]
    if plan.cfg.workers == 0:
        _init_worker(plan.cfg)
        results = _hash_eval_images(paths)
    else:
        with worker_pool(plan.cfg) as pool:
            hashed = bounded_imap(pool, _hash_eval_images, paths, max_in_flight=4 * plan.cfg.workers)
            results = list(tqdm(hashed, total=len(paths), desc="hash eval sets", unit="img", disable=not plan.progress))
    kept_paths = [p for p, h, _ in results if h is not None]
    hashes = np.array([h for _, h, _ in results if h is not None], dtype=np.uint64)
    failed = Counter(reason for _, h, reason in results if h is None)
    return kept_paths, hashes, failed


def _ref(row: dict) -> dict:
    return {"key": row["key"], "source": row["source"], "path": row["path"], "phash": row["phash"]}


def remove_contaminated_scenes(rows: list[dict], removed: dict[str, str]) -> dict[str, str]:
    """Tiles of one scene never straddle the train/eval split: when a tile is contaminated, every other tile of its
    scene is removed as ``scene_contaminated`` (added to ``removed``); returns a message per such tile."""
    hit = {}
    for row in rows:
        if "tile" in row and removed.get(row_id(row)) == "contaminated":
            hit.setdefault(row["index"], row)
    why = {}
    for row in rows:
        if row["index"] in hit and row_id(row) not in removed:
            removed[row_id(row)] = "scene_contaminated"
            why[row_id(row)] = (f"{row['path']}: tile {row['key']} dropped: tile {hit[row['index']]['key']} of the same scene "
                                "matches an image of a --dedup-against set")
    return why


def run_dedup_pass(plan: BuildPlan) -> None:
    done = plan.work / "dedup.json"
    if done.exists():
        log.info("dedup pass already done, skipping")
        return
    rows = [r for r in load_records(plan) if r["status"] == "ok"]
    check_unique_keys(rows)
    hashes = np.array([int(r["phash"], 16) for r in rows], dtype=np.uint64)
    threshold, segments = plan.cfg.dedup.threshold, plan.cfg.dedup.segments
    removed: dict[int, str] = {}
    contaminated_out: list[dict] = []
    eval_paths, eval_hashes, eval_failed = hash_eval_sets(plan) if plan.dedup_against else ([], np.zeros(0, np.uint64), Counter())
    if len(eval_hashes):
        for hit in find_contaminated(hashes, eval_hashes, threshold, segments):
            row = rows[hit.train]
            removed[row_id(row)] = "contaminated"
            contaminated_out.append({
                "removed": _ref(row),
                "matched": {"path": eval_paths[hit.matches[0][0]], "phash": f"{int(eval_hashes[hit.matches[0][0]]):016x}"},
                "distance": hit.matches[0][1],
                "all_matches": [{"path": eval_paths[e], "distance": d} for e, d in hit.matches],
                "n_matches": hit.n_matches,
            })
    why = remove_contaminated_scenes(rows, removed)
    duplicates_out: list[dict] = []
    if plan.cfg.dedup.within:
        remaining = [i for i, r in enumerate(rows) if row_id(r) not in removed]
        for dup in find_duplicates(hashes[remaining], threshold, segments):
            row, kept = rows[remaining[dup.removed]], rows[remaining[dup.kept]]
            removed[row_id(row)] = "duplicate"
            duplicates_out.append({"removed": _ref(row), "matched": _ref(kept), "distance": dup.distance})
    atomic_write_json(plan.output / "duplicates.json", duplicates_out)
    atomic_write_json(plan.output / "contaminated.json", contaminated_out)
    atomic_write_json(done, {
        "removed": dict(sorted(removed.items())),
        "why": why,
        "eval_images": len(eval_paths),
        "eval_skipped": dict(eval_failed),
        "threshold": threshold,
    })


# ---------------------------------------------------------------- pass 3: write shards


def kept_rows(plan: BuildPlan) -> list[dict]:
    removed = json.loads((plan.work / "dedup.json").read_text())["removed"]
    return [r for r in load_records(plan) if r["status"] == "ok" and row_id(r) not in removed]


def shard_assignment(n_kept: int, shard_size: int) -> list[range]:
    """Ordinal ranges of each shard: shard s holds kept samples [s*N, (s+1)*N)."""
    return [range(s, min(s + shard_size, n_kept)) for s in range(0, n_kept, shard_size)]


def run_write_pass(plan: BuildPlan) -> None:
    marker = plan.work / f"write-{plan.node_rank:04d}.done"
    if marker.exists():
        log.info("write pass of node %d already done, skipping", plan.node_rank)
        return
    rows = kept_rows(plan)
    shards = shard_assignment(len(rows), plan.cfg.writer.shard_size)
    readers = {rank: StagedReader(plan.work / f"node-{rank:04d}") for rank in range(plan.num_nodes)}
    mine = [s for s in range(len(shards)) if s % plan.num_nodes == plan.node_rank]
    for shard in tqdm(mine, desc=f"write shards (node {plan.node_rank})", unit="shard", disable=not plan.progress):
        samples = []
        for ordinal in shards[shard]:
            row = rows[ordinal]
            reader = readers[row["node"]]
            members = {ext: reader.read(MemberRef.from_json(ref)) for ext, ref in row["members"].items()}
            samples.append((row["key"], members))
        write_shard(plan.output / SHARD_PATTERN.format(shard), samples)
    for reader in readers.values():
        reader.close()
    atomic_write_json(marker, {"shards": mine})


# ---------------------------------------------------------------- pass 4: manifest, report


def versions() -> dict:
    """Installed versions of what shapes the shards (from package metadata: importing webdataset would pull
    in torch, ~2 s, for a version string)."""
    from importlib.metadata import PackageNotFoundError, version

    def of(dist: str) -> str | None:
        try:
            return version(dist)
        except PackageNotFoundError:
            return None

    out = {"toolkit": __version__, "python": platform.python_version()}
    for name, dist in (("numpy", "numpy"), ("pillow", "pillow"), ("opencv", "opencv-python-headless"), ("imagehash", "imagehash"),
                       ("faiss", "faiss-cpu"), ("webdataset", "webdataset")):
        out[name] = of(dist)
    if out["faiss"] is None:
        out["faiss"] = of("faiss-gpu")
    return out


def empty_counts() -> dict:
    return {"read": 0, "written": 0, "skipped": Counter(), "duplicates": 0, "contaminated": 0}


def row_objects(row: dict, removed: dict[str, str]) -> Counter:
    """A row's object counts; the objects of an image removed by de-duplication count as dropped with it."""
    objects = Counter(row.get("objects", {}))
    why = removed.get(row_id(row))
    if why is not None and objects.get("kept"):
        objects[f"dropped:{why}"] += objects.pop("kept")
        objects.pop("clipped", None)
    return objects


def count_row(counts: dict, row: dict, removed: dict[str, str]) -> None:
    counts["read"] += 1
    if row["status"] != "ok":
        counts["skipped"][row["reason"]] += 1
    elif row_id(row) in removed:
        why = removed[row_id(row)]
        if why in ("duplicate", "contaminated"):
            counts["duplicates" if why == "duplicate" else "contaminated"] += 1
        else:  # scene_contaminated: a tile of a scene another of whose tiles is contaminated
            counts["skipped"][why] += 1
    else:
        counts["written"] += 1


def scene_tally(rows: list[dict], removed: dict[str, str]) -> dict:
    """report.json's ``scenes``: records read = whole + tiled + sum(skipped) (skipped before any tile was cut), and
    ``tiles``: the tiles of the tiled scenes, read = written + sum(skipped) + duplicates + contaminated."""
    scenes = {"read": 0, "whole": 0, "tiled": 0, "skipped": Counter()}
    tiles = empty_counts()
    for row in rows:
        if "tile" in row:
            count_row(tiles, row, removed)
            scenes["tiled"] += row["tile"] == 0
        elif row["status"] != "ok":
            scenes["skipped"][row["reason"]] += 1
        else:
            scenes["whole"] += 1
    scenes["read"] = scenes["whole"] + scenes["tiled"] + sum(scenes["skipped"].values())
    return {**scenes, "skipped": dict(sorted(scenes["skipped"].items())),
            "tiles": {**tiles, "skipped": dict(sorted(tiles["skipped"].items()))}}


def tally(rows: list[dict], removed: dict[str, str], sources: list[str], dataset_issues: list[dict] = ()) -> dict:
    """report.json's counts: read = written + sum(skipped) + duplicates + contaminated, overall and per source;
    objects: read = kept + sum(dropped), kept being the objects of written images."""
    total = empty_counts()
    per_source = {name: empty_counts() for name in sources}
    objects: Counter = Counter()
    for row in rows:
        for counts in (total, per_source[row["source"]]):
            count_row(counts, row, removed)
        objects.update(row_objects(row, removed))
    for issue in dataset_issues:  # annotations no image took
        objects["read"] += issue["objects"]
        objects[f"dropped:{issue['reason']}"] += issue["objects"]

    def plain(c: dict) -> dict:
        return {**c, "skipped": dict(sorted(c["skipped"].items()))}

    out = plain(total)
    out["scenes"] = scene_tally(rows, removed)
    out["sources"] = {name: plain(c) for name, c in per_source.items()}
    out["objects"] = {
        "read": objects.get("read", 0), "kept": objects.get("kept", 0), "clipped": objects.get("clipped", 0),
        "dropped": {k.split(":", 1)[1]: v for k, v in sorted(objects.items()) if k.startswith("dropped:")},
    }
    return out


def report_samples(plan: BuildPlan, rows: list[dict], limit: int) -> list[dict]:
    """Up to ``limit`` written samples for the report, taken round-robin over sources."""
    from PIL import Image

    by_source: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_source[row["source"]].append(row)
    picked: list[dict] = []
    queues = [list(v) for v in by_source.values()]
    while len(picked) < limit and any(queues):
        for queue in queues:
            if queue and len(picked) < limit:
                picked.append(queue.pop(0))
    readers = {rank: StagedReader(plan.work / f"node-{rank:04d}") for rank in range(plan.num_nodes)}
    samples = []
    for row in picked:
        reader = readers[row["node"]]
        meta = json.loads(reader.read(MemberRef.from_json(row["members"]["json"])))
        image = Image.open(io.BytesIO(reader.read(MemberRef.from_json(row["members"]["jpg"])))).convert("RGB")
        samples.append({"key": row["key"], "source": row["source"], "image": image, "captions": meta["captions"], "objects": meta["objects"], "path": row["path"]})
    for reader in readers.values():
        reader.close()
    return samples


def write_issue_log(plan: BuildPlan, rows: list[dict], dataset_issues: list[dict] = (), why: dict | None = None) -> list[dict]:
    """Every skip and object-level problem with its file:line message, one JSON object a line, each once;
    problems that belong to no image come last with ``key`` null."""
    examples: dict[str, dict] = {}
    with open(plan.output / "issues.jsonl", "w") as fh:
        def put(key: str | None, source: str, item: dict) -> None:
            fh.write(json.dumps({"key": key, "source": source, "reason": item["reason"], "message": item["message"]},
                                ensure_ascii=False) + "\n")
            examples.setdefault(item["reason"], item)

        for row in rows:
            items = list(row.get("issues", []))
            if row["status"] != "ok":
                items.insert(0, {"reason": row["reason"], "message": row["message"]})
            elif why and row_id(row) in why:
                items.insert(0, {"reason": "scene_contaminated", "message": why[row_id(row)]})
            seen: set[tuple[str, str]] = set()
            for item in items:
                if (item["reason"], item["message"]) not in seen:
                    seen.add((item["reason"], item["message"]))
                    put(row["key"], row["source"], item)
        for issue in dataset_issues:
            put(None, issue["source"], issue)
    return list(examples.values())


def run_finalize_pass(plan: BuildPlan, started: float | None = None) -> dict:
    from shards.report import write_html_report

    missing = [r for r in range(plan.num_nodes) if not (plan.work / f"write-{r:04d}.done").exists()]
    if missing:
        raise RuntimeError(f"write pass not finished for node(s) {missing}; run --stage write there first")
    rows = load_records(plan)
    dedup = json.loads((plan.work / "dedup.json").read_text())
    removed = dedup["removed"]
    kept = [r for r in rows if r["status"] == "ok" and row_id(r) not in removed]
    shards = shard_assignment(len(kept), plan.cfg.writer.shard_size)
    shard_list = [{"name": SHARD_PATTERN.format(s), "samples": len(rng)} for s, rng in enumerate(shards)]
    for entry in shard_list:
        if not (plan.output / entry["name"]).exists():
            raise RuntimeError(f"{plan.output / entry['name']} is missing after the write pass")
    dataset_issues = load_dataset_issues(plan)
    counts = plan.with_sensors(tally(rows, removed, [s.name for s in plan.inputs], dataset_issues))
    counts["shards"] = len(shard_list)
    counts["eval_images"] = dedup["eval_images"]
    if dedup["eval_skipped"]:
        counts["eval_skipped"] = dedup["eval_skipped"]
    hash_seconds = sum(json.loads((plan.work / f"node-{r:04d}" / "DONE").read_text())["seconds"] for r in range(plan.num_nodes))
    counts["timing"] = {"hash_pass_seconds": round(hash_seconds, 2), "images_per_s": round(counts["read"] / hash_seconds, 2) if hash_seconds else None}
    if started is not None:
        counts["timing"]["seconds"] = round(time.perf_counter() - started, 2)
    examples = write_issue_log(plan, rows, dataset_issues, dedup.get("why"))
    atomic_write_json(plan.output / "sizes.json", {e["name"]: e["samples"] for e in shard_list})  # after the shards
    atomic_write_json(plan.output / "report.json", counts)
    class_counts: Counter = Counter()
    for row in kept:
        class_counts.update(row.get("classes", {}))
    duplicates = json.loads((plan.output / "duplicates.json").read_text())
    contaminated = json.loads((plan.output / "contaminated.json").read_text())
    write_html_report(
        plan.output, {**counts, "issues_examples": examples}, report_samples(plan, kept, plan.cfg.report.grid_samples),
        duplicates, contaminated, dict(class_counts), plan.cfg.report,
    )
    # the manifest comes last: its presence is what says "this build finished" (shards.writer.build_state)
    atomic_write_json(plan.output / MANIFEST, {
        "shards": shard_list,
        "num_samples": len(kept),
        "inputs": [{"format": s.fmt, "path": str(s.path), "name": s.name} for s in plan.inputs],
        "dedup_against": [str(p) for p in plan.dedup_against],
        "config": to_dict(plan.cfg),
        "versions": versions(),
        "members": {"jpg": "RGB JPEG", "txt": "one caption (seeded choice of the five)",
                    "json": "all captions, source, rel_path, objects, phash"},
    })
    if not plan.cfg.writer.keep_work:
        shutil.rmtree(plan.work)
    return counts


# ---------------------------------------------------------------- driver


def check_inputs(plan: BuildPlan) -> None:
    """Cheap checks before any work: every input is a dataset in its format, every --dedup-against set exists."""
    for spec in plan.inputs:
        check_input(spec.fmt, spec.path)
    for path in plan.dedup_against:
        check_eval_set(path)


def run_build(plan: BuildPlan, stage: str = "all", overwrite: bool = False) -> dict | None:
    """Run one pass (``stage``) or all of them; returns report.json's content after ``finalize``."""
    started = time.perf_counter()
    if stage not in STAGES + ("all",):
        raise ValueError(f"unknown stage {stage!r}; choose from {', '.join(STAGES + ('all',))}")
    check_inputs(plan)
    action = check_output(plan, overwrite)
    # one live process per output folder (per node and pass in cluster mode, where nodes share the folder)
    lock_name = LOCK_NAME if plan.num_nodes == 1 else f"{LOCK_NAME}-{stage}-{plan.node_rank:04d}"
    with RunLock(plan.output, lock_name, what="shard build"):
        prepare_output(plan, action)
        stages = STAGES if stage == "all" else (stage,)
        result = None
        for name in stages:
            if name == "hash":
                run_hash_pass(plan)
            elif name == "dedup":
                run_dedup_pass(plan)
            elif name == "write":
                run_write_pass(plan)
            else:
                result = run_finalize_pass(plan, started)
    return result
