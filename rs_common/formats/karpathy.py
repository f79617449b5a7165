"""Human caption sets in Karpathy json form (RSICD, UCM-captions, Sydney-captions, RSITMD): read by stage 0 (the
``captions`` reader, ``--dedup-against``) and by stage-1 retrieval evaluation.

``{"images": [{"filename", "split", "sentences": [{"raw", ...}], ...}], "dataset": ...}``. ROOT is the json, or a
folder holding ``dataset*.json`` (else its only ``*.json``). Images are in ``ROOT/images``, ``ROOT/imgs``,
``ROOT/RSICD_images`` or the json's folder; an entry's ``filepath`` (COCO-Karpathy style) is a sub-folder of that.
Captions are the ``raw`` sentences (the joined ``tokens`` when raw is missing), stripped, all kept. An entry without
a file name or without sentences carries a ``problem``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rs_common.errors import AnnotationError, LayoutError
from rs_common.files import first_existing_dir, load_json_file, rel_posix

IMAGE_DIRS = ("images", "imgs", "RSICD_images")


@dataclass(frozen=True)
class CaptionEntry:
    """One ``images[index]`` entry of a caption json; ``problem`` says why it cannot be used.

    ``named`` is False for an entry without a file name (its ``image_path`` is a placeholder)."""

    json_path: Path
    index: int
    image_path: Path
    rel_path: str
    split: str | None
    captions: tuple[str, ...]
    problem: str | None = None
    named: bool = True


def caption_json_files(root: Path) -> list[Path]:
    """The caption json(s) of ROOT (a .json file, or a folder's ``dataset*.json``, else its single ``*.json``)."""
    if root.is_file():
        if root.suffix.lower() != ".json":
            raise LayoutError(f"{root}: a caption set is a Karpathy .json file or a folder holding dataset*.json")
        return [root]
    files = sorted(root.glob("dataset*.json")) or sorted(root.glob("*.json"))
    if len(files) == 1 or (files and files[0].name.startswith("dataset")):
        return files
    raise LayoutError(f"{root}: no caption json (expected dataset*.json or a single *.json)")


def is_caption_set(path: Path) -> bool:
    """A caption json, or a folder holding ``dataset*.json`` (what ``--dedup-against`` treats as one)."""
    return (path.is_file() and path.suffix.lower() == ".json") or (path.is_dir() and any(path.glob("dataset*.json")))


def images_folder(data_root: Path, json_path: Path) -> Path:
    """Where a caption json's images are by default: ``images/``, ``imgs/`` or ``RSICD_images/`` under the dataset
    root, else the json's folder."""
    return first_existing_dir(data_root, IMAGE_DIRS) or json_path.parent


def load_caption_images(json_path: Path) -> list:
    """The json's ``images`` list; invalid JSON or another shape is an AnnotationError naming the file."""
    data = load_json_file(json_path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise AnnotationError(json_path, None, 'not a Karpathy caption json (expected an object with an "images" list)')
    return data["images"]


def iter_entries(json_path: Path, data_root: Path, images_dir: Path | None = None) -> Iterator[CaptionEntry]:
    """The json's image entries, in file order, each with its image path and captions (or a problem).
    ``images_dir``: the image folder (default: :func:`images_folder`)."""
    images = load_caption_images(json_path)
    folder = images_dir or images_folder(data_root, json_path)
    for index, entry in enumerate(images):
        yield parse_entry(entry, index, json_path, data_root, folder)


def parse_entry(entry: Any, index: int, json_path: Path, data_root: Path, images_dir: Path) -> CaptionEntry:
    name = entry.get("filename") if isinstance(entry, dict) else None
    if not isinstance(name, str) or not name.strip():
        rel = f"{rel_posix(json_path, data_root)}#images[{index}]"
        return CaptionEntry(json_path, index, images_dir / rel, rel, None, (), f"images[{index}] has no filename", named=False)
    image_path = entry_image_path(images_dir, data_root, entry.get("filepath"), name.strip())
    split = entry.get("split")
    captions = sentence_texts(entry.get("sentences"))
    problem = None if captions else f"images[{index}] ({name}) has no sentences"
    return CaptionEntry(json_path, index, image_path, rel_posix(image_path, data_root),
                        str(split) if split is not None else None, captions, problem)


def entry_image_path(images_dir: Path, data_root: Path, filepath: Any, filename: str) -> Path:
    """``filepath``/``filename`` under the images folder (or the dataset root), else ``filename`` there."""
    if isinstance(filepath, str) and filepath:
        for base in (images_dir, data_root):
            if (base / filepath).is_dir():
                return base / filepath / filename
    return images_dir / filename


def sentence_texts(sentences: Any) -> tuple[str, ...]:
    """The ``raw`` text of each sentence (its joined ``tokens`` when raw is missing), stripped, empties dropped."""
    if not isinstance(sentences, list):
        return ()
    texts = []
    for sentence in sentences:
        if isinstance(sentence, str):
            texts.append(sentence)
        elif isinstance(sentence, dict) and isinstance(sentence.get("raw"), str):
            texts.append(sentence["raw"])
        elif isinstance(sentence, dict) and isinstance(sentence.get("tokens"), list):
            texts.append(" ".join(str(t) for t in sentence["tokens"]))
    return tuple(t.strip() for t in texts if t.strip())
