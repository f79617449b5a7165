"""Human caption sets in Karpathy json form (RSICD, UCM-captions, Sydney-captions, RSITMD).

``{"images": [{"filename", "split", "sentences": [{"raw", ...}], ...}], "dataset": ...}``. ROOT is the
json, or a folder holding ``dataset*.json`` (else its only ``*.json``). Images are in ``ROOT/images``,
``ROOT/imgs``, ``ROOT/RSICD_images`` or the json's folder; an entry's ``filepath`` (COCO-Karpathy style)
is a sub-folder of that. Captions are the ``raw`` sentences, stripped, all kept. Images whose split is
not in ``captions.train_splits`` are yielded with a record-level ``held_out_split`` issue, so they are
counted and never trained on (an entry without a split is training data); an entry without sentences
is a record-level ``malformed_annotation``. ``origin_line`` is the entry's index in ``images``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shards.build_config import BuildConfig
from shards.readers._common import absolute, first_existing_dir, load_json_file, record_issue, rel_posix, sort_records
from shards.record import AnnotationError, LayoutError, Record

IMAGE_DIRS = ("images", "imgs", "RSICD_images")


@dataclass(frozen=True)
class CaptionEntry:
    """One ``images[index]`` entry of a caption json; ``problem`` says why it cannot be trained on.

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
    if root.is_file():
        if root.suffix.lower() != ".json":
            raise LayoutError(f"{root}: a caption set is a Karpathy .json file or a folder holding dataset*.json")
        return [root]
    files = sorted(root.glob("dataset*.json")) or sorted(root.glob("*.json"))
    if len(files) == 1 or (files and files[0].name.startswith("dataset")):
        return files
    raise LayoutError(f"{root}: no caption json (expected dataset*.json or a single *.json)")


def check_layout(root: Path) -> None:
    caption_json_files(absolute(root))


def is_caption_set(path: Path) -> bool:
    """A caption json, or a folder holding ``dataset*.json`` (what ``--dedup-against`` treats as one)."""
    return (path.is_file() and path.suffix.lower() == ".json") or (path.is_dir() and any(path.glob("dataset*.json")))


def read(root: Path, source: str, cfg: BuildConfig) -> Iterator[Record]:
    root = absolute(root)
    for json_path in caption_json_files(root):
        entries = iter_entries(json_path, root if root.is_dir() else json_path.parent)
        yield from sort_records([entry_record(e, source, cfg.captions.train_splits) for e in entries])


def iter_entries(json_path: Path, data_root: Path) -> Iterator[CaptionEntry]:
    """The json's image entries, in file order, each with its image path and captions (or a problem)."""
    data = load_json_file(json_path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise AnnotationError(json_path, None, 'a caption json must be an object with an "images" list (Karpathy format)')
    images_dir = first_existing_dir(data_root, IMAGE_DIRS) or json_path.parent
    for index, entry in enumerate(data["images"]):
        yield parse_entry(entry, index, json_path, data_root, images_dir)


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


def entry_record(entry: CaptionEntry, source: str, train_splits: list[str]) -> Record:
    record = Record(source=source, image_path=entry.image_path, rel_path=entry.rel_path, captions=list(entry.captions),
                    split=entry.split, origin=str(entry.json_path), origin_line=entry.index)
    if entry.problem is not None:
        record.issues.append(record_issue("malformed_annotation", entry.json_path, None, entry.problem))
    elif entry.split is not None and entry.split not in train_splits:
        record.issues.append(record_issue(
            "held_out_split", entry.json_path, None,
            f"images[{entry.index}] ({entry.rel_path}) is in split {entry.split!r}, "
            f"not in captions.train_splits {list(train_splits)}",
        ))
    return record
