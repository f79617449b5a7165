"""GeoChat fine-tuning data: LLaVA json + image folder -> (input_ids, labels, attention_mask, pixel_values).

- Images are padded to a square filled with the image processor's mean colour (GeoChat/LLaVA
  ``image_aspect_ratio="pad"``, ``expand2square(img, tuple(int(x * 255) for x in image_mean))``), then go through the
  processor's CLIP image processor (resize + centre crop to the model's image size): :mod:`vlm_finetune.image_prep`,
  the one preprocessing that inference and evaluation use too.
- The text is the vicuna_v1 prompt (:mod:`rs_common.formats.conversation`) tokenised piece by piece with the ``<image>``
  replaced by ``image_seq_length`` image-token ids (what HF LlavaProcessor's expansion gives), so labels stay aligned.
- Truncation to ``max_length`` only cuts text after the image tokens; a sample whose image tokens alone do not fit is
  dropped.
- Images are checked when the data loads, not at the first batch (:func:`screen_images`: each file is stat'ed and its
  header opened, nothing decoded): records whose image is missing or unreadable are dropped. ``dataset.dropped``
  maps each reason (``missing_image``, ``unreadable_image``, ``image_tokens_exceed_max_length``) to the ids dropped
  for it. An image that still fails to decode during training is replaced by another sample, with a warning naming
  the file, so one bad file never ends a long run.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import Dataset

from rs_common.formats.conversation import IGNORE_INDEX, IMAGE_TOKEN, tokenize_with_labels
from rs_common.formats.llava_record import read_records, validate_record
from vlm_finetune.image_prep import (  # noqa: F401 - expand2square, mean_colour: re-exported, tests import them here
    PAD,
    SQUARE,
    check_mode,
    expand2square,
    mean_colour,
    pixel_values,
    prepare_image,
)
from vlm_finetune.instruct import InstructError

logger = logging.getLogger(__name__)


class FinetuneError(ValueError):
    """A fine-tuning setup problem the user can fix (raised by the data and by :mod:`vlm_finetune.train`)."""


def processor_image_tokens(processor) -> int:
    """Image tokens per image of a GeoChat LlavaProcessor: ``(crop // patch) ** 2`` (CLS dropped)."""
    ip = processor.image_processor
    crop = ip.crop_size
    h = crop.get("height") if isinstance(crop, Mapping) else crop.height
    w = crop.get("width") if isinstance(crop, Mapping) else crop.width
    n = (h // processor.patch_size) * (w // processor.patch_size) + processor.num_additional_image_tokens
    return n - 1 if processor.vision_feature_select_strategy == "default" else n


DROP_REASONS = ("missing_image", "unreadable_image", "image_tokens_exceed_max_length")


@dataclass
class ScreenedRecords:
    """Instruction records whose images exist and open, and what was dropped: reason -> record ids, and reason -> the
    first file (or record) dropped for it, for messages."""

    records: list[dict]
    source: str = "records"
    dropped: dict[str, list[str]] = field(default_factory=lambda: {r: [] for r in DROP_REASONS})
    first: dict[str, str] = field(default_factory=dict)

    def drop(self, reason: str, record_id: str, example: str) -> None:
        self.dropped.setdefault(reason, []).append(record_id)
        self.first.setdefault(reason, example)

    def describe_drops(self) -> str:
        """``missing_image 3 (first: a/b.png), unreadable_image 1 (first: c.png)``; "none" when nothing was dropped."""
        parts = [f"{reason} {len(ids)} (first: {self.first.get(reason)})" for reason, ids in self.dropped.items() if ids]
        return ", ".join(parts) or "none"


def image_problem(path: Path) -> str | None:
    """None when ``path`` is a file PIL recognises as an image (header read, nothing decoded), else the reason:
    ``missing_image`` or ``unreadable_image``."""
    from PIL import Image

    if not path.exists():
        return "missing_image"
    try:
        with Image.open(path):
            return None
    except Exception:  # noqa: BLE001 - a folder, no permission, not an image, a decompression bomb...
        return "unreadable_image"


def screen_images(records: list[dict], image_dir, source: str = "records") -> ScreenedRecords:
    """Keep the records whose image (under ``image_dir``) exists and opens; each distinct file is checked once. The
    drops are counted by reason and logged."""
    image_dir = Path(image_dir)
    out = ScreenedRecords([], source)
    problems: dict[Path, str | None] = {}
    for i, rec in enumerate(records):
        path = image_dir / rec["image"]
        if path not in problems:
            problems[path] = image_problem(path)
        if problems[path] is None:
            out.records.append(rec)
        else:
            out.drop(problems[path], str(rec.get("id", i)), str(path))
    for reason, ids in out.dropped.items():
        if ids:
            logger.warning("%s: %d of %d records dropped, %s (first: %s)", source, len(ids), len(records), reason,
                           out.first[reason])
    return out


def load_image(path, pad: bool | str, image_processor):
    """The image at ``path`` as the processor receives it (:func:`vlm_finetune.image_prep.prepare_image`); ``pad``:
    a mode (``"pad"``/``"square"``) or a bool (True = ``"pad"``)."""
    from PIL import Image

    with Image.open(path) as im:
        image = im.convert("RGB")
    return prepare_image(image, image_processor, _mode(pad))


def _mode(pad: bool | str | None) -> str:
    return check_mode(pad) if isinstance(pad, str) or pad is None else (PAD if pad else SQUARE)


class GeoChatDataset(Dataset):
    """Samples of a LLaVA-format json (a path, a list of records, or :class:`ScreenedRecords` already checked) with
    images under ``image_dir``.

    Images are checked (exist, header opens) and text is tokenised at construction (cheap), so unusable and over-long
    samples are known up front: ``dropped`` maps each of :data:`DROP_REASONS` to the record ids dropped for it.
    Images load lazily in ``__getitem__``."""

    def __init__(self, data, image_dir, processor, max_length: int = 2048, image_seq_length: int | None = None,
                 pad_to_square: bool = True, image_aspect_ratio: str | None = None, high_res_grid: int = 0):
        screened = data if isinstance(data, ScreenedRecords) else screen_images(
            _read_records(data), image_dir, str(data) if isinstance(data, (str, Path)) else "records")
        self.image_dir = Path(image_dir)
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.image_processor = processor.image_processor
        # one preprocessing for training, inference and evaluation (vlm_finetune.image_prep); a mode given wins
        self.image_aspect_ratio = _mode(image_aspect_ratio if image_aspect_ratio is not None else pad_to_square)
        self.pad_to_square = self.image_aspect_ratio == PAD
        self.max_length = int(max_length)
        self.high_res_grid = int(high_res_grid)  # N of a dual-perspective model: 2N^2 + 1 sub-images; 0 = plain
        self.image_seq_length = int(image_seq_length or processor_image_tokens(processor))
        self.image_token_id = self.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        self.items: list[tuple[dict, list[int], list[int]]] = []
        dropped = {reason: [] for reason in DROP_REASONS} | {k: list(v) for k, v in screened.dropped.items()}
        self.screened = ScreenedRecords([], screened.source, dropped, dict(screened.first))
        self.dropped = self.screened.dropped
        self.truncated = 0
        self._bad: set[int] = set()  # items whose image failed to decode in this process
        self._warned: set[Path] = set()
        for i, rec in enumerate(screened.records):
            ids, labels = tokenize_with_labels(rec["conversations"], self.tokenizer, IMAGE_TOKEN, self.image_seq_length)
            image_pos = [k for k, t in enumerate(ids) if t == self.image_token_id]
            if image_pos and image_pos[-1] + 1 > self.max_length:
                self.screened.drop("image_tokens_exceed_max_length", str(rec.get("id", i)),
                                   f"record {rec.get('id', i)!r} ({image_pos[-1] + 1} tokens to the last image token)")
                continue
            if len(ids) > self.max_length:
                ids, labels = ids[:self.max_length], labels[:self.max_length]
                self.truncated += 1
            self.items.append((rec, ids, labels))
        too_long = self.dropped["image_tokens_exceed_max_length"]
        if too_long:
            logger.warning("%d samples dropped: their %d image tokens do not fit max_length %d (first: %s)",
                           len(too_long), self.image_seq_length, self.max_length, too_long[0])
        if self.truncated:
            logger.info("%d samples truncated to max_length %d (text after the image only)", self.truncated,
                        self.max_length)

    def __len__(self) -> int:
        return len(self.items)

    def _sample(self, index: int) -> dict:
        rec, ids, labels = self.items[index]
        from PIL import Image

        with Image.open(self.image_dir / rec["image"]) as im:
            image = im.convert("RGB")
        pixels = pixel_values(image, self.image_processor, self.image_aspect_ratio, self.high_res_grid)[0]
        return {"input_ids": torch.tensor(ids, dtype=torch.long), "labels": torch.tensor(labels, dtype=torch.long),
                "pixel_values": pixels}

    def __getitem__(self, index: int) -> dict:
        """The sample at ``index``; when its image fails to decode (checked readable at load time, but truncated
        data only shows when decoded) the next sample whose image does is given instead, and the file is logged
        once: a long run is not killed by one bad file."""
        if not 0 <= index < len(self.items):
            raise IndexError(f"sample {index} of {len(self.items)}")
        for step in range(len(self.items)):
            i = (index + step) % len(self.items)
            if i in self._bad:
                continue
            try:
                return self._sample(i)
            except Exception as exc:  # noqa: BLE001 - truncated data, decoder errors, decompression bombs
                self._bad.add(i)
                path = self.image_dir / self.items[i][0]["image"]
                if path not in self._warned:
                    self._warned.add(path)
                    logger.warning("image %s does not decode (%s: %s): another sample is used in its place",
                                   path, type(exc).__name__, exc)
        raise FinetuneError(f"{self.screened.source}: none of the {len(self.items)} samples' images decodes "
                            f"(first: {self.image_dir / self.items[index][0]['image']})")


def _read_records(data) -> list[dict]:
    """Validated records of a LLaVA json path or a list (errors name the file or record)."""
    if isinstance(data, (str, Path)):
        return read_records(data, InstructError)
    records = list(data)
    for i, rec in enumerate(records):
        validate_record(rec, i, InstructError)
    return records


class GeoChatCollator:
    """Right-pads ``input_ids`` (pad id), ``labels`` (-100), builds ``attention_mask``, stacks ``pixel_values``."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = int(pad_token_id)

    def __call__(self, batch: list[dict]) -> dict:
        n = max(len(b["input_ids"]) for b in batch)
        ids = torch.full((len(batch), n), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(batch), n), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(batch), n), dtype=torch.long)
        for i, b in enumerate(batch):
            k = len(b["input_ids"])
            ids[i, :k] = b["input_ids"]
            labels[i, :k] = b["labels"]
            mask[i, :k] = 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask,
                "pixel_values": torch.stack([b["pixel_values"] for b in batch])}
