"""Embedding for evaluation: images and texts through a CLIP model in batches (no_grad, eval mode, float16 autocast on
CUDA as clip_benchmark evaluates), float32 unit rows out; an image that does not decode is skipped and counted."""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from clip_pretrain.evaluate.common import EvalError
from clip_pretrain.evaluate.eval_sets import EvalItem, EvalSet, load_rgb
from rs_common.errors import SampleSkip
from rs_common.torch_env import precision_autocast, resolve_device as resolve_any_device

log = logging.getLogger(__name__)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``auto`` -> cuda when available, else cpu; an unknown device name, or CUDA asked for on a machine without it,
    is an EvalError."""
    return resolve_any_device(device, EvalError)


def eval_autocast(device: torch.device):
    """float16 autocast on CUDA (as clip_benchmark evaluates), nothing on CPU: open_clip's ``amp``."""
    return precision_autocast("amp", device)


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module):
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def _to_numpy_normalised(feats: torch.Tensor) -> np.ndarray:
    return torch.nn.functional.normalize(feats.float(), dim=-1).cpu().numpy()


class ImageDataset(torch.utils.data.Dataset):
    """Decoded and preprocessed images; a failure gives ``(index, None, reason, message)`` instead of raising."""

    def __init__(self, items: Sequence[EvalItem | Path | str], preprocess: Callable):
        self.items = items
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        item = self.items[index]
        try:
            return index, self.preprocess(load_rgb(item)), None, None
        except SampleSkip as exc:
            return index, None, exc.reason, str(exc)
        except Exception as exc:  # noqa: BLE001 - one bad image never stops an evaluation
            label = item.label if isinstance(item, EvalItem) else str(item)
            return index, None, "unreadable_image", f"{label}: {type(exc).__name__}: {exc}"


def _collate_list(batch):
    return batch


def encode_images(
    model: torch.nn.Module,
    preprocess: Callable,
    items: Sequence[EvalItem | Path | str],
    device: str | torch.device = "cpu",
    batch_size: int = 64,
    workers: int = 0,
    progress: str | None = None,
) -> tuple[np.ndarray, np.ndarray, Counter]:
    """Embed images in batches (no_grad, eval mode, fp16 autocast on CUDA); unreadable ones are skipped.
    ``progress``: the label of a tqdm bar over the batches (shown on a terminal only).

    Returns ``(emb, kept, skipped)``: float32 unit rows for the images that decoded, in input order;
    ``kept`` the indices of those images in ``items``; ``skipped`` a Counter of reasons.
    """
    device = resolve_device(device)
    loader = torch.utils.data.DataLoader(
        ImageDataset(items, preprocess), batch_size=batch_size, shuffle=False, num_workers=workers,
        collate_fn=_collate_list, pin_memory=device.type == "cuda",
    )
    embs: list[np.ndarray] = []
    kept: list[int] = []
    skipped: Counter = Counter()
    with eval_mode(model), torch.no_grad(), eval_autocast(device):
        for batch in tqdm(loader, desc=progress, unit="batch", disable=None if progress else True):
            good = [(i, x) for i, x, reason, msg in batch if x is not None]
            for _, x, reason, msg in batch:
                if x is None:
                    skipped[reason] += 1
                    log.warning("skipped image: %s", msg)
            if not good:
                continue
            pixels = torch.stack([x for _, x in good]).to(device, non_blocking=True)
            embs.append(_to_numpy_normalised(model.encode_image(pixels)))
            kept.extend(i for i, _ in good)
    dim = int(embs[0].shape[1]) if embs else 0
    emb = np.concatenate(embs) if embs else np.zeros((0, dim), dtype=np.float32)
    return emb, np.asarray(kept, dtype=np.int64), skipped


def encode_texts(
    model: torch.nn.Module,
    tokenizer: Callable,
    texts: Sequence[str],
    device: str | torch.device = "cpu",
    batch_size: int = 256,
) -> np.ndarray:
    """Embed texts in batches (no_grad, eval mode, fp16 autocast on CUDA); float32 unit rows."""
    device = resolve_device(device)
    embs: list[np.ndarray] = []
    with eval_mode(model), torch.no_grad(), eval_autocast(device):
        for start in range(0, len(texts), batch_size):
            tokens = tokenizer(list(texts[start:start + batch_size])).to(device)
            embs.append(_to_numpy_normalised(model.encode_text(tokens)))
    return np.concatenate(embs) if embs else np.zeros((0, 0), dtype=np.float32)


def embed_eval_set(bundle, eval_set: EvalSet, device: torch.device, batch_size: int = 64, workers: int = 0):
    """(image_emb, text_emb, text_to_image, kept items, skipped) for an eval set; images that do not decode
    are left out together with their captions."""
    image_emb, kept, skipped = encode_images(bundle.model, bundle.preprocess_val, eval_set.items, device, batch_size, workers)
    kept_items = [eval_set.items[i] for i in kept.tolist()]
    texts = [c for item in kept_items for c in item.captions]
    text_to_image = np.asarray([i for i, item in enumerate(kept_items) for _ in item.captions], dtype=np.int64)
    text_emb = encode_texts(bundle.model, bundle.tokenizer, texts, device, max(batch_size, 256))
    return image_emb, text_emb, text_to_image, kept_items, skipped
