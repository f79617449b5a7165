"""A build's output folder: what a build may write there, remove there, and when it refuses to start.

A build touches only what it wrote: ``check_output`` decides before anything is written whether the folder is new,
a build to resume, or a build to replace (``--overwrite``), and refuses everything else; ``remove_build`` deletes
only the names a build writes.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from rs_common.config import to_dict
from rs_common.files import atomic_write_json
from rs_common.formats.shard_sample import BUILD_MARKER, MANIFEST, SHARD_NAME, WORK, build_state
from rs_common.guards import LOCK_NAME, check_apart
from shards import __version__
from shards.plan import BuildPlan

# every file name a build writes into its output folder (besides shard-NNNNNN.tar): all --overwrite may remove
OUTPUT_FILES = frozenset({MANIFEST, "sizes.json", "report.json", "report.html", "report.png", "duplicates.json",
                          "contaminated.json", "issues.jsonl", BUILD_MARKER})


def is_build_file(name: str) -> bool:
    """True for a name a build writes into its output folder (temporary ``*.tmp`` twins and lock files included)."""
    if name.endswith(".tmp"):
        name = name[:-4]
    return name in OUTPUT_FILES or name == WORK or bool(SHARD_NAME.match(name)) or name.startswith(LOCK_NAME)


def check_output(plan: BuildPlan, overwrite: bool) -> str:
    """Decide, before anything is written, what happens to ``plan.output``: ``"new"``, ``"resume"`` or
    ``"replace"`` (``--overwrite`` of a previous build). Refused: an output that is, lies in, or holds an input;
    a non-empty folder that no build wrote; a build folder that also holds files no build wrote; a finished
    build without ``--overwrite``. A refusal never suggests ``--overwrite`` for a folder that is not a build."""
    out = plan.output
    check_apart(out, [("--input", s.path) for s in plan.inputs] + [("--dedup-against", p) for p in plan.dedup_against])
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--output {out} is a file, not a folder")
    entries = [e for e in out.iterdir() if not e.name.startswith(LOCK_NAME)] if out.is_dir() else []
    if not entries:
        return "new"
    state = build_state(out)
    if state == "none":
        raise FileExistsError(f"--output {out} is not empty and holds no shard build (no {BUILD_MARKER} or "
                              f"{MANIFEST}); choose an empty or new folder - nothing there was changed")
    foreign = sorted(e.name for e in entries if not is_build_file(e.name))
    if foreign:
        raise FileExistsError(f"--output {out} holds a shard build but also {len(foreign)} entr{'y' if len(foreign) == 1 else 'ies'} "
                              f"no build wrote ({', '.join(foreign[:5])}{' ...' if len(foreign) > 5 else ''}); move "
                              "them away or choose another folder - nothing there was changed")
    if overwrite:
        return "replace"
    if state == "finished":
        raise FileExistsError(f"{out} already holds a finished build ({MANIFEST}); pass --overwrite to replace it "
                              "or choose a new --output")
    return "resume"


def remove_build(out: Path) -> None:
    """Delete what a previous build wrote in ``out`` - only names it writes (``is_build_file``), the manifest first
    so an interrupted removal leaves an unfinished build, never a finished-looking one. A link is removed, never
    followed."""
    entries = sorted(out.iterdir(), key=lambda e: (e.name != MANIFEST, e.name == BUILD_MARKER, e.name))
    for entry in entries:
        if not is_build_file(entry.name) or entry.name.startswith(LOCK_NAME):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def prepare_output(plan: BuildPlan, action: str) -> None:
    """Carry out ``check_output``'s decision (under the run lock): clear a replaced build, mark the folder as a
    build's, and check that a resumed build has the same inputs and settings."""
    out = plan.output
    if action == "replace":
        remove_build(out)
    out.mkdir(parents=True, exist_ok=True)
    if not (out / BUILD_MARKER).exists():
        atomic_write_json(out / BUILD_MARKER, {"tool": "rs-clip-toolkit shard build", "version": __version__,
                                               "created": time.strftime("%Y-%m-%d %H:%M:%S")})
    plan.work.mkdir(parents=True, exist_ok=True)
    settings = {"inputs": [[s.fmt, str(s.path), s.name] for s in plan.inputs], "dedup_against": [str(p) for p in plan.dedup_against],
                "config": to_dict(plan.cfg), "num_nodes": plan.num_nodes}
    settings["config"].pop("workers")  # may differ between reruns and nodes without changing the result
    stamp = plan.work / "settings.json"
    if not stamp.exists():
        atomic_write_json(stamp, settings)
    elif json.loads(stamp.read_text()) != settings:
        raise ValueError(f"{out} holds a build in progress with other inputs or settings; pass --overwrite to start over")
