"""The errors that cross a stage boundary: raised by the shared readers and decoders (``rs_common.files``,
``rs_common.imageio``, ``rs_common.formats``) and caught by every stage that uses them."""

from __future__ import annotations

import re
from pathlib import Path


class LayoutError(ValueError):
    """A dataset folder that is not in the layout its format needs (checked before any work starts)."""


class AnnotationError(ValueError):
    """A malformed annotation. The message always names the file and, when known, the line."""

    def __init__(self, path: str | Path, line: int | None, message: str, reason: str = "malformed_annotation"):
        self.path = str(path)
        self.line = line
        self.reason = reason
        loc = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{loc}: {message}")


class SampleSkip(Exception):
    """Raised when one sample (one image) cannot be used; ``reason`` is a short stable key counted in reports."""

    def __init__(self, reason: str, message: str):
        self.reason = reason
        super().__init__(message)


def first_line(exc: BaseException, limit: int = 200) -> str:
    """``Type: first sentence of the message`` (at most ``limit`` characters), or the type alone when there is none
    (an IndexError from a zero-byte file has no message); for ``torch.load(weights_only=True)`` refusing a pickled
    object, its reason rather than the advice around it. Every weights loader's one-line errors use it."""
    refused = re.search(r"WeightsUnpickler error: ([^\n]*)", str(exc))
    if refused:
        return f"it holds objects other than tensors, refused by torch.load(weights_only=True): " \
               f"{refused.group(1).split('. ')[0]}"
    lines = str(exc).strip().splitlines()
    text = lines[0].split(". ")[0] if lines else ""  # the first sentence: the advice after it is torch's, not ours
    if len(text) > limit:
        text = text[:limit].rsplit(" ", 1)[0] + " ..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
