"""Files: atomic writes, folder listing that survives link loops, and whole-file json loading.

Every write here goes to ``NAME.tmp`` first, is fsync'd and renamed over ``NAME``: a killed job never leaves a
half-written file under the real name. Listing never opens an image (the callers' workers do that, in parallel).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from rs_common.errors import AnnotationError

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp"})


# ---------------------------------------------------------------- atomic writes


def atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def atomic_write_text(path: Path, text: str) -> None:
    """``text`` as UTF-8, atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False) + "\n")


# ---------------------------------------------------------------- paths and listing


def is_image_file(path: Path) -> bool:
    """True for a file name with an image extension (case-insensitive); does not touch the disk."""
    return path.suffix.lower() in IMAGE_EXTENSIONS


def absolute(path: Path) -> Path:
    """Absolute path without resolving symlinks (datasets are often linked in from elsewhere)."""
    return Path(os.path.abspath(path))


def rel_posix(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` as a posix string (with ``..`` when it is not under ``root``; never absolute,
    so keys and shard JSON never carry a machine's paths)."""
    return Path(os.path.relpath(absolute(path), absolute(root))).as_posix()


def rel_stem(path: Path, root: Path) -> str:
    """Relative posix path without the extension: the key that pairs an image with its annotation file."""
    rel = rel_posix(path, root)
    head, _, name = rel.rpartition("/")
    stem = name.rsplit(".", 1)[0] if "." in name else name
    return f"{head}/{stem}" if head else stem


def is_under(path: Path, root: Path) -> bool:
    """True when ``path`` lies in ``root`` after normalising ``..`` (symlinks are not resolved: a dataset whose
    folders are links to elsewhere is still one dataset)."""
    rel = os.path.relpath(absolute(path), absolute(root))
    return rel != ".." and not rel.startswith("../") and not os.path.isabs(rel)


def real_id(folder: Path) -> tuple[int, int]:
    """(device, inode) of a folder: what ``walk``'s ``seen`` holds."""
    st = os.stat(folder)
    return st.st_dev, st.st_ino


def walk(folder: Path, hidden: bool = True,
         seen: set[tuple[int, int]] | None = None) -> Iterator[tuple[Path, list[str], list[str]]]:
    """``os.walk(folder, followlinks=True)`` that enters every real folder once.

    Links are followed (datasets are often assembled from links), but a folder reached a second time - a link
    loop, or two links to one folder - is not entered again, so a loop can neither hang the listing nor list
    one image many times. Pass one ``seen`` set to several walks to share that across them. ``hidden=False``
    also skips entries whose name starts with a dot. Sub-folder names come sorted; prune ``dirnames`` in place
    as with os.walk."""
    seen = set() if seen is None else seen
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        try:
            here = real_id(Path(dirpath))
        except OSError:
            dirnames[:] = []
            continue
        if here in seen:
            dirnames[:] = []
            continue
        seen.add(here)
        dirnames[:] = sorted(d for d in dirnames if hidden or not d.startswith("."))
        yield Path(dirpath), dirnames, [f for f in filenames if hidden or not f.startswith(".")]


def list_files(folder: Path, keep: Callable[[Path], bool] = lambda p: True, hidden: bool = False,
               seen: set[tuple[int, int]] | None = None) -> list[Path]:
    """Every file under ``folder`` (recursive, following links, each real folder once - see ``walk``) that
    ``keep`` accepts, sorted by relative path so every listing's order is deterministic. Hidden entries (names
    starting with a dot) are left out unless ``hidden``."""
    found: list[Path] = []
    for base, _, filenames in walk(folder, hidden, seen):
        found.extend(base / name for name in filenames if keep(base / name))
    return sorted(found, key=lambda p: rel_posix(p, folder))


def list_images(folder: Path, hidden: bool = False, seen: set[tuple[int, int]] | None = None) -> list[Path]:
    """Image files under ``folder`` (recursive), sorted by relative path; [] when it does not exist."""
    return list_files(folder, is_image_file, hidden, seen) if folder.is_dir() else []


def first_existing_dir(root: Path, names: Sequence[str]) -> Path | None:
    """The first ``root/name`` that is a directory, or None."""
    for name in names:
        if (root / name).is_dir():
            return root / name
    return None


# ---------------------------------------------------------------- json


def load_json_file(path: Path) -> Any:
    """Parse a whole-dataset json; an unreadable or invalid file is fatal (AnnotationError with the line)."""
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except json.JSONDecodeError as exc:
        raise AnnotationError(path, exc.lineno, f"not valid JSON: {exc.msg} (column {exc.colno})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise AnnotationError(path, None, f"cannot read: {exc}") from None


def check_output_folder(output: str | Path, error: type[Exception] = ValueError) -> Path:
    """``output`` as a Path, checked before any model is loaded: an existing file there (not a folder) is ``error``."""
    out = Path(output).expanduser()
    if out.exists() and not out.is_dir():
        raise error(f"--output {out}: exists and is not a folder")
    return out
