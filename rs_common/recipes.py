"""Training recipes: the ``--config`` file a run started from, kept verbatim in its run folder, and the check that
a run's global batch is the recipe's.

A recipe is a YAML file of settings (``configs/`` ships RemoteCLIP's and GeoChat's) that a training tool takes as
``--config FILE``, flags overriding it. When a run starts from one, :func:`record_recipe` copies the file byte for
byte (comments and all) to ``OUTPUT/recipe.yaml``, atomically, and returns ``{"source", "sha256", "copy"}`` for the
run's summary. A continued run given a recipe that differs from the one it started with warns and keeps the earlier
file as ``recipe.<sha256[:12]>.yaml``; nothing is ever deleted.

A paper's batch size is a global batch: per-device batch x processes x gradient-accumulation steps.
:func:`global_batch_problem` says, in one line, when a run's layout does not give the recipe's, and how to fix it.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

from rs_common.files import atomic_write_bytes

log = logging.getLogger(__name__)

RECIPE_NAME = "recipe.yaml"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _set_aside(output: Path, earlier: bytes) -> Path:
    """The earlier ``recipe.yaml`` kept as ``recipe.<sha12>.yaml`` (same bytes, so writing it twice is harmless)."""
    kept = output / f"recipe.{sha256_hex(earlier)[:12]}.yaml"
    atomic_write_bytes(kept, earlier)
    return kept


def record_recipe(recipe: str | Path | None, output: str | Path, resuming: bool) -> dict | None:
    """Copy ``recipe`` (the ``--config`` file, or None) verbatim to ``OUTPUT/recipe.yaml`` and return what the run
    records of it: ``{"source": absolute path, "sha256": of its bytes, "copy": OUTPUT/recipe.yaml}``.

    Only the process that writes the run's files calls this. ``resuming``: this invocation continues a run from a
    checkpoint. A continued run with the same recipe rewrites nothing; with another one it warns, keeps the earlier
    copy as ``recipe.<sha12>.yaml`` and records the new one. A continued run without ``--config`` keeps the copy,
    warns that the recipe's settings no longer apply unless given again, and records the copy's sha256. A fresh run
    without a recipe sets an earlier run's copy aside, so ``recipe.yaml`` never describes another run."""
    output = Path(output)
    copy = output / RECIPE_NAME
    earlier = copy.read_bytes() if copy.is_file() else None
    if recipe is None:
        if earlier is None:
            return None
        if not resuming:
            log.info("%s is an earlier run's recipe: kept as %s", copy, _set_aside(output, earlier).name)
            copy.unlink()
            return None
        sha = sha256_hex(earlier)
        log.warning("continuing a run that started from a recipe (%s, sha256 %s) without --config: the settings it set "
                    "that the checkpoint does not check come from the defaults and flags now; pass --config %s to keep "
                    "them", copy, sha[:12], copy)
        return {"source": None, "sha256": sha, "copy": str(copy), "note": "recipe of an earlier invocation"}
    data = Path(recipe).read_bytes()
    sha = sha256_hex(data)
    if earlier is not None and earlier != data:
        kept = _set_aside(output, earlier)
        if resuming:
            log.warning("--config %s (sha256 %s) differs from the recipe this run started with (sha256 %s): continuing "
                        "with the new one; the earlier one is kept as %s", recipe, sha[:12], sha256_hex(earlier)[:12],
                        kept)
    if earlier != data:
        atomic_write_bytes(copy, data)
    return {"source": os.path.abspath(recipe), "sha256": sha, "copy": str(copy)}


def global_batch_problem(want: int, per_device: int, processes: int, accum: int, batch_flag: str = "--batch-size",
                         accum_flag: str = "--accum-freq") -> str | None:
    """None when ``want`` is 0 (no check) or equals per-device batch x processes x accumulation steps; otherwise one
    line with the product and the fix: another ``accum_flag``, another ``batch_flag``, or another process count."""
    have = per_device * processes * accum
    if not want or have == want:
        return None
    fixes = []
    if want % (per_device * processes) == 0:
        fixes.append(f"pass {accum_flag} {want // (per_device * processes)}")
    if want % (processes * accum) == 0:
        fixes.append(f"pass {batch_flag} {want // (processes * accum)}")
    if not fixes and want % processes == 0:
        fixes.append(f"pass {batch_flag} {want // processes} {accum_flag} 1")
    if not fixes:  # the processes cannot share it evenly: name the counts that can
        counts = [n for n in range(1, min(want, 64) + 1) if want % n == 0]
        n = max(c for c in counts if c <= processes)
        fixes.append(f"run {', '.join(map(str, counts))} processes, not {processes} (e.g. torchrun --nproc_per_node {n} "
                     f"with {batch_flag} {want // n})")
    return (f"global batch {have} = {batch_flag} {per_device} x {processes} process(es) x {accum_flag} {accum}, but "
            f"global_batch_size is {want}: {' or '.join(fixes)} to train with {want}, or pass --global-batch-size 0 "
            f"to train with {have}")
