"""GeoChat fine-tuning data: LLaVA json + image folder -> (input_ids, labels, attention_mask, pixel_values).

- Images are padded to a square filled with the image processor's mean colour (GeoChat/LLaVA
  ``image_aspect_ratio="pad"``, ``expand2square(img, tuple(int(x * 255) for x in image_mean))``), then go through the
  processor's CLIP image processor (resize + centre crop to the model's image size).
- The text is the vicuna_v1 prompt (:mod:`vlm_finetune.conversation`) tokenised piece by piece with the ``<image>``
  replaced by ``image_seq_length`` image-token ids (what HF LlavaProcessor's expansion gives), so labels stay aligned.
- Truncation to ``max_length`` only cuts text after the image tokens; a sample whose image tokens alone do not fit is
  dropped (``dataset.dropped`` names them).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import torch
from torch.utils.data import Dataset

from vlm_finetune.conversation import IGNORE_INDEX, tokenize_with_labels
from vlm_finetune.instruct import IMAGE_TOKEN, read_instruct_json, validate_record

logger = logging.getLogger(__name__)


def expand2square(image, background):
    """LLaVA's pad-to-square: the image centred on a ``background``-coloured square of its longer side."""
    from PIL import Image

    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    out = Image.new(image.mode, (side, side), background)
    out.paste(image, ((side - width) // 2, (side - height) // 2))
    return out


def mean_colour(image_processor) -> tuple[int, int, int]:
    return tuple(int(x * 255) for x in image_processor.image_mean)


def processor_image_tokens(processor) -> int:
    """Image tokens per image of a GeoChat LlavaProcessor: ``(crop // patch) ** 2`` (CLS dropped)."""
    ip = processor.image_processor
    crop = ip.crop_size
    h = crop.get("height") if isinstance(crop, Mapping) else crop.height
    w = crop.get("width") if isinstance(crop, Mapping) else crop.width
    n = (h // processor.patch_size) * (w // processor.patch_size) + processor.num_additional_image_tokens
    return n - 1 if processor.vision_feature_select_strategy == "default" else n


def load_image(path, pad: bool, image_processor):
    from PIL import Image

    with Image.open(path) as im:
        image = im.convert("RGB")
    if pad:
        image = expand2square(image, mean_colour(image_processor))
    return image


class GeoChatDataset(Dataset):
    """Samples of a LLaVA-format json (a path or a list of records) with images under ``image_dir``.

    Text is tokenised at construction (cheap) so over-long samples are known up front; images load lazily."""

    def __init__(self, data, image_dir, processor, max_length: int = 2048, image_seq_length: int | None = None,
                 pad_to_square: bool = True):
        records = read_instruct_json(data) if isinstance(data, (str, Path)) else list(data)
        if not isinstance(data, (str, Path)):
            for i, rec in enumerate(records):
                validate_record(rec, i)
        self.image_dir = Path(image_dir)
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.image_processor = processor.image_processor
        self.pad_to_square = pad_to_square
        self.max_length = int(max_length)
        self.image_seq_length = int(image_seq_length or processor_image_tokens(processor))
        self.image_token_id = self.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        self.items: list[tuple[dict, list[int], list[int]]] = []
        self.dropped: list[str] = []
        self.truncated = 0
        for i, rec in enumerate(records):
            ids, labels = tokenize_with_labels(rec["conversations"], self.tokenizer, IMAGE_TOKEN, self.image_seq_length)
            image_pos = [k for k, t in enumerate(ids) if t == self.image_token_id]
            if image_pos and image_pos[-1] + 1 > self.max_length:
                self.dropped.append(str(rec.get("id", i)))
                continue
            if len(ids) > self.max_length:
                ids, labels = ids[:self.max_length], labels[:self.max_length]
                self.truncated += 1
            self.items.append((rec, ids, labels))
        if self.dropped:
            logger.warning("%d samples dropped: their %d image tokens do not fit max_length %d (first: %s)",
                           len(self.dropped), self.image_seq_length, self.max_length, self.dropped[0])
        if self.truncated:
            logger.info("%d samples truncated to max_length %d (text after the image only)", self.truncated,
                        self.max_length)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        rec, ids, labels = self.items[index]
        image = load_image(self.image_dir / rec["image"], self.pad_to_square, self.image_processor)
        pixel_values = self.image_processor(images=image, return_tensors="pt")["pixel_values"][0]
        return {"input_ids": torch.tensor(ids, dtype=torch.long), "labels": torch.tensor(labels, dtype=torch.long),
                "pixel_values": pixel_values}


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
