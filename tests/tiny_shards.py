"""Tiny stage-0-format shards written directly (no build), for fast stage-1 tests."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from shards.writer import SHARD_PATTERN, atomic_write_json, write_shard

COLOURS = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (40, 60, 220), "yellow": (230, 220, 40)}


def sample_members(i: int, size: int = 48, seed: int = 0) -> dict[str, bytes]:
    """A textured image whose dominant colour its five captions name."""
    name = list(COLOURS)[i % len(COLOURS)]
    rng = np.random.default_rng(seed * 100_003 + i)
    pixels = np.clip(np.array(COLOURS[name]) + rng.normal(0, 30, (size, size, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
    captions = [f"a {name} field, tile #{i}.", f"an aerial photo of {name} ground, tile #{i}.", f"{name} area, tile #{i}.",
                f"a satellite image that is mostly {name}, tile #{i}.", f"there is {name} land, tile #{i}."]
    return {"jpg": buf.getvalue(), "txt": captions[0].encode(), "json": json.dumps({"captions": captions}).encode()}


def write_tiny_shards(out: Path, n: int = 96, shard_size: int = 32, size: int = 48, corrupt: tuple[int, ...] = ()) -> Path:
    """``n`` samples in shards of ``shard_size`` plus sizes.json; indices in ``corrupt`` get undecodable jpg bytes."""
    out.mkdir(parents=True, exist_ok=True)
    sizes = {}
    for s, start in enumerate(range(0, n, shard_size)):
        samples = []
        for i in range(start, min(n, start + shard_size)):
            members = sample_members(i, size)
            if i in corrupt:
                members["jpg"] = b"\xff\xd8 not a jpeg"
            samples.append((f"tiny__{i:06d}", members))
        write_shard(out / SHARD_PATTERN.format(s), samples)
        sizes[SHARD_PATTERN.format(s)] = len(samples)
    atomic_write_json(out / "sizes.json", sizes)
    return out
