"""The images of evaluation sets given to ``--dedup-against``, for the contamination check.

A caption json (or a folder with ``dataset*.json``) gives the images of its ``captions.eval_splits``;
any other folder gives every image under it, hidden files included (guarding more is the safe side).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

from rs_common.errors import LayoutError
from rs_common.files import absolute, list_images
from rs_common.formats.karpathy import caption_json_files, is_caption_set, iter_entries
from shards.build_config import BuildConfig


def iter_eval_images(path: Path, cfg: BuildConfig) -> Iterator[tuple[Path, Path]]:
    """``(image, the set's root)`` for every image of the set; the caller checks that the image lies in the root."""
    path = absolute(Path(path))
    check_eval_set(path)
    if is_caption_set(path):
        for json_path in caption_json_files(path):
            root = path if path.is_dir() else json_path.parent
            yield from ((image, root) for image in eval_split_images(json_path, root, cfg.captions.eval_splits))
    else:
        yield from ((image, path) for image in list_images(path, hidden=True))


def check_eval_set(path: Path) -> None:
    """A ``--dedup-against`` path must be a caption json or a folder (of images, or holding dataset*.json)."""
    path = absolute(Path(path))
    if not path.exists():
        raise LayoutError(f"--dedup-against {path}: not found")
    if not is_caption_set(path) and not path.is_dir():
        raise LayoutError(f"--dedup-against {path}: an evaluation set must be a caption .json or a folder of images")


def eval_split_images(json_path: Path, data_root: Path, eval_splits: list[str]) -> list[Path]:
    """Images of ``eval_splits`` in rel_path order; all images (with a warning) when no entry is in them."""
    usable = sorted((e for e in iter_entries(json_path, data_root) if e.named), key=lambda e: e.rel_path)
    chosen = [e for e in usable if e.split in eval_splits]
    if not chosen:
        warnings.warn(f"{json_path}: no image is in the splits {list(eval_splits)}; using all {len(usable)} of its images",
                      stacklevel=2)
        chosen = usable
    return [e.image_path for e in chosen]

