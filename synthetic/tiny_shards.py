"""Tiny stage-0-format shards written directly (no build), for fast stage-1 tests and the GPU training bench."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rs_common.files import atomic_write_json
from rs_common.formats import shard_sample
from rs_common.formats.shard_sample import SHARD_PATTERN, SIZES
from shards.writer import write_shard
from synthetic.drawing import encode
from synthetic.faults import CORRUPT_JPEG

COLOURS = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (40, 60, 220), "yellow": (230, 220, 40)}


def sample_members(i: int, size: int = 48, seed: int = 0) -> dict[str, bytes]:
    """A textured image whose dominant colour its five captions name."""
    name = list(COLOURS)[i % len(COLOURS)]
    rng = np.random.default_rng(seed * 100_003 + i)
    pixels = np.clip(np.array(COLOURS[name]) + rng.normal(0, 30, (size, size, 3)), 0, 255).astype(np.uint8)
    captions = [f"a {name} field, tile #{i}.", f"an aerial photo of {name} ground, tile #{i}.", f"{name} area, tile #{i}.",
                f"a satellite image that is mostly {name}, tile #{i}.", f"there is {name} land, tile #{i}."]
    return shard_sample.sample_members(encode("sample.jpg", pixels, quality=90), captions[0], {"captions": captions})


def write_tiny_shards(out: Path, n: int = 96, shard_size: int = 32, size: int = 48, corrupt: tuple[int, ...] = ()) -> Path:
    """``n`` samples in shards of ``shard_size`` plus sizes.json; indices in ``corrupt`` get undecodable jpg bytes."""
    out.mkdir(parents=True, exist_ok=True)
    sizes = {}
    for s, start in enumerate(range(0, n, shard_size)):
        samples = []
        for i in range(start, min(n, start + shard_size)):
            members = sample_members(i, size)
            if i in corrupt:
                members["jpg"] = CORRUPT_JPEG
            samples.append((f"tiny__{i:06d}", members))
        write_shard(out / SHARD_PATTERN.format(s), samples)
        sizes[SHARD_PATTERN.format(s)] = len(samples)
    atomic_write_json(out / SIZES, sizes)
    return out
