"""Human caption sets in Karpathy json form (RSICD, UCM-captions, Sydney-captions, RSITMD); the format itself
(layout, image folders, entries, sentences) is :mod:`rs_common.formats.karpathy`, shared with stage-1 evaluation.

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
from pathlib import Path

from rs_common.files import absolute
from rs_common.formats.karpathy import CaptionEntry, caption_json_files, iter_entries
from shards.build_config import BuildConfig
from shards.readers._common import record_issue, sort_records
from shards.record import Record


def check_layout(root: Path) -> None:
    caption_json_files(absolute(root))


def read(root: Path, source: str, cfg: BuildConfig) -> Iterator[Record]:
    root = absolute(root)
    for json_path in caption_json_files(root):
        entries = iter_entries(json_path, root if root.is_dir() else json_path.parent)
        yield from sort_records([entry_record(e, source, cfg.captions.train_splits) for e in entries])


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
