"""The images of evaluation sets given to ``--dedup-against``, for the contamination check.

A caption json (or a folder with ``dataset*.json``) gives the images of its ``captions.eval_splits``;
any other folder gives every image under it.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

from shards.build_config import BuildConfig
from shards.readers._common import absolute, list_images
from shards.readers.captions import caption_json_files, is_caption_set, iter_entries


def iter_eval_images(path: Path, cfg: BuildConfig) -> Iterator[Path]:
    path = absolute(Path(path))
    if not path.exists():
        raise FileNotFoundError(f"evaluation set not found: {path}")
    if is_caption_set(path):
        for json_path in caption_json_files(path):
            yield from eval_split_images(json_path, path if path.is_dir() else json_path.parent, cfg.captions.eval_splits)
    elif path.is_dir():
        yield from list_images(path)
    else:
        raise ValueError(f"{path}: an evaluation set must be a caption json or a folder of images")


def eval_split_images(json_path: Path, data_root: Path, eval_splits: list[str]) -> list[Path]:
    """Images of ``eval_splits`` in rel_path order; all images (with a warning) when no entry is in them."""
    usable = sorted((e for e in iter_entries(json_path, data_root) if e.named), key=lambda e: e.rel_path)
    chosen = [e for e in usable if e.split in eval_splits]
    if not chosen:
        warnings.warn(f"{json_path}: no image is in the splits {list(eval_splits)}; using all {len(usable)} of its images",
                      stacklevel=2)
        chosen = usable
    return [e.image_path for e in chosen]

