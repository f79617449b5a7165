"""Image features computed once per image per model, shared by every task of an evaluation suite and, with a cache
folder, by later runs.

Keys: a model key (model name, QuickGELU, the checkpoint file's resolved path, size and modification time, and the
image preprocessing) and per image the file's resolved path, size and modification time, so an edited image or a
rewritten checkpoint is embedded afresh. The checkpoint is not hashed (a ViT-L-14 file is 1.7 GB); a file rewritten in
place keeps neither its size nor its mtime in practice.

On disk: ``CACHE/<model key>/model.json`` (what the key covers) and ``part-*.npz`` files (``keys``, ``features``),
each written atomically once per batch of new images; a run reads all parts of its model key. Images that do not
decode are not cached (they are retried and counted on every run).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from rs_common.files import atomic_write_json

log = logging.getLogger(__name__)


def file_key(path: Path) -> str:
    """``resolved path|size|mtime_ns``; a missing file gets a key of its own (it is then skipped when embedded)."""
    p = Path(path).expanduser().resolve()
    try:
        st = p.stat()
    except OSError:
        return f"{p}|missing"
    return f"{p}|{st.st_size}|{st.st_mtime_ns}"


def checkpoint_key(checkpoint: str | None) -> str:
    """A weights file's key; a folder (a run dir, a hub snapshot) by the keys of the files directly in it."""
    if not checkpoint:
        return "random init (seed 0)"
    p = Path(checkpoint).expanduser()
    if p.is_dir():
        return ";".join(file_key(f) for f in sorted(p.iterdir()) if f.is_file())
    return file_key(p)


def model_key(model: str, checkpoint: str | None, quick_gelu: bool, preprocess) -> tuple[str, dict]:
    """(short hex key, the description it hashes)."""
    described = {"model": model, "quick_gelu": bool(quick_gelu), "checkpoint": checkpoint_key(checkpoint),
                 "preprocess": repr(preprocess)}
    digest = hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:20]
    return digest, described


class FeatureCache:
    """Image features of one model by image key: in memory for the run, on disk too when ``folder`` is given."""

    def __init__(self, folder: str | Path | None, key: str, described: dict):
        self.rows: dict[str, np.ndarray] = {}
        self.folder = Path(folder).expanduser() / key if folder else None
        self.hits = 0
        self.computed = 0
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
            if not (self.folder / "model.json").exists():
                atomic_write_json(self.folder / "model.json", described)
            self._load_parts()

    def _load_parts(self) -> None:
        for part in sorted(self.folder.glob("part-*.npz")):
            try:
                with np.load(part, allow_pickle=False) as data:
                    self.rows.update(zip(data["keys"].tolist(), data["features"]))
            except (OSError, ValueError, KeyError) as exc:  # a damaged part is ignored: its images are embedded again
                log.warning("feature cache: ignoring unreadable %s (%s)", part, exc)
        if self.rows:
            log.info("feature cache: %d image features of this model in %s", len(self.rows), self.folder)

    def _save_part(self, keys: list[str], features: np.ndarray) -> None:
        if self.folder is None or not keys:
            return
        name = f"part-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{len(list(self.folder.glob('part-*.npz')))}"
        tmp = self.folder / f".{name}.tmp.npz"
        np.savez(tmp, keys=np.asarray(keys), features=features.astype(np.float32))
        os.replace(tmp, self.folder / f"{name}.npz")

    def features(self, paths: Sequence[Path], encode: Callable[[list[Path]], tuple[np.ndarray, np.ndarray, Counter]]
                 ) -> tuple[np.ndarray, np.ndarray, Counter]:
        """``(features, kept, skipped)`` for ``paths`` as ``encode`` returns them (rows of the images that decoded, in
        input order; their indices; skip reasons), calling ``encode`` only on the images not cached yet."""
        keys = [file_key(p) for p in paths]
        todo = sorted({k: i for i, k in reversed(list(enumerate(keys))) if k not in self.rows}.values())
        skipped: Counter = Counter()
        if todo:
            emb, kept, skipped = encode([paths[i] for i in todo])
            new_keys = [keys[todo[j]] for j in kept.tolist()]
            self.rows.update(zip(new_keys, emb))
            self.computed += len(new_keys)
            self._save_part(new_keys, emb)
        self.hits += len(keys) - len(todo)
        feats, kept = self.lookup(paths, keys)
        return feats, kept, skipped

    def lookup(self, paths: Sequence[Path], keys: list[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(features, kept)`` of the images already in the cache (no embedding): rows in input order, their indices."""
        keys = keys if keys is not None else [file_key(p) for p in paths]
        found = [i for i, k in enumerate(keys) if k in self.rows]
        if not found:
            return np.zeros((0, 0), dtype=np.float32), np.zeros(0, dtype=np.int64)
        return np.stack([self.rows[keys[i]] for i in found]).astype(np.float32), np.asarray(found, dtype=np.int64)
