"""Hostile inputs for ``launch/pretrain_clip.py`` (stage 1 training)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.hostile import files as f
from tests.hostile.assets import Assets
from tests.hostile.corpus import Case
from tests.hostile.processes import run_sigterm, run_torchrun_killed

TOOL = "pretrain_clip.py"


def argv(ws: Path, *extra: str, data: Path | None = None) -> list[str]:
    return ["--train-data", str(data or ws / "in" / "shards"), "--model", "rs-tiny", "--batch-size", "8",
            "--max-steps", "2", "--warmup", "1", "--workers", "0", "--device", "cpu", "--output", str(ws / "out"),
            "--save-every-steps", "100", "--log-every-steps", "1", "--shuffle-buffer", "16", *extra]


def shards(ws: Path) -> Path:
    return Assets.of(ws).copy("shards", ws / "in" / "shards")


def with_shards(*extra: str):
    return lambda ws: (shards(ws), argv(ws, *extra))[1]


def trained(ws: Path) -> Path:
    """A 2-step run in ws/out, as an earlier job left it."""
    from clip_pretrain.cli import main

    shards(ws)
    assert main(argv(ws)) == 0
    return ws / "out"


def summary(ws: Path) -> dict:
    return json.loads((ws / "out" / "summary.json").read_text())


# ---------------------------------------------------------------- data


def _all_corrupt(ws: Path) -> list[str]:
    from synthetic.tiny_shards import write_tiny_shards

    write_tiny_shards(ws / "in" / "shards", n=32, shard_size=32, corrupt=tuple(range(32)))
    return argv(ws)


def _caption_extension(ws: Path) -> list[str]:
    from shards.writer import write_shard
    from synthetic.tiny_shards import sample_members

    out = ws / "in" / "shards"
    out.mkdir(parents=True)
    samples = []
    for i in range(32):
        members = sample_members(i)
        samples.append((f"s{i:04d}", {"jpg": members["jpg"], "caption": members["txt"]}))
    write_shard(out / "shard-000000.tar", samples)
    return argv(ws)


def _cut_shard(ws: Path, keep: float) -> list[str]:
    shards(ws)
    f.truncate(ws / "in" / "shards" / "shard-000001.tar", keep)
    return argv(ws)


def _unfinished(ws: Path) -> list[str]:
    from rs_common.formats.shard_sample import BUILD_MARKER

    (shards(ws) / BUILD_MARKER).write_text("{}")
    return argv(ws)


def _sizes_lie(ws: Path) -> list[str]:
    data = shards(ws)
    sizes = json.loads((data / "sizes.json").read_text())
    sizes["shard-000000.tar"] += 8  # promises 8 samples the tar does not hold
    (data / "sizes.json").write_text(json.dumps(sizes))
    return argv(ws, "--max-steps", "0", "--epochs", "1")


def _some_corrupt(ws: Path) -> list[str]:
    from synthetic.tiny_shards import write_tiny_shards

    write_tiny_shards(ws / "in" / "shards", n=64, shard_size=32, corrupt=(3, 40))
    return argv(ws, "--max-steps", "7")


# ---------------------------------------------------------------- weights and checkpoints


def _resume_cut(ws: Path) -> list[str]:
    out = trained(ws)
    ckpt = out / "checkpoints" / "step_00000002.pt"
    f.truncate(ckpt, 0.5)
    return argv(ws, "--resume", str(ckpt))


def _pretrained_empty(ws: Path) -> list[str]:
    shards(ws)
    (ws / "in" / "empty.pt").write_bytes(b"")
    return argv(ws, "--pretrained", str(ws / "in" / "empty.pt"))


def _torchscript(ws: Path) -> list[str]:
    shards(ws)
    Assets.of(ws).copy("torchscript", ws / "in" / "ViT-B-32.pt")
    return argv(ws, "--pretrained", str(ws / "in" / "ViT-B-32.pt"))


def _diverges(ws: Path) -> list[str]:
    shards(ws)
    return argv(ws, "--lr", "1e6", "--warmup", "0", "--max-steps", "30", "--save-every-steps", "1",
                "--keep-checkpoints", "0")


def _diverged_check(ws: Path) -> None:
    import torch

    from clip_pretrain.checkpoint import load_checkpoint

    assert not (ws / "out" / "final.safetensors").exists()
    for path in (ws / "out" / "checkpoints").glob("step_*.pt"):
        assert all(torch.isfinite(t).all() for t in load_checkpoint(path)["state_dict"].values()), path


def _stopped_cleanly(ws: Path) -> None:
    from clip_pretrain.checkpoint import load_checkpoint

    s = summary(ws)
    assert s["status"] == "interrupted" and s["step"] >= 2, s
    assert load_checkpoint(ws / "out" / "checkpoints" / "latest")["step"] == s["step"]


def _corrupt_counted(ws: Path) -> None:
    skipped = summary(ws)["skipped"]
    assert skipped.get("corrupt_image", 0) >= 1, skipped


def _long_run(ws: Path) -> list[str]:
    shards(ws)
    return argv(ws, "--max-steps", "100000", "--save-every-steps", "100000")


def _hold_lock(ws: Path):
    from rs_common.guards import RunLock

    return RunLock(ws / "out", what="training run")


CASES = [
    Case(TOOL, "`--keep-checkpoints -5`", "refused before any work (it used to delete every checkpoint)",
         with_shards("--keep-checkpoints", "-5"), names=lambda ws: "keep_checkpoints", output=lambda ws: None),
    Case(TOOL, "`--save-every-steps 0`, `--log-every-steps 0`", "refused before any work (was a ZeroDivisionError)",
         with_shards("--save-every-steps", "0", "--log-every-steps", "0"), names=lambda ws: "every_steps",
         output=lambda ws: None),
    Case(TOOL, "`--lr inf`", "refused before any work: every number must be finite", with_shards("--lr", "inf"),
         names=lambda ws: "'lr'", output=lambda ws: None),
    Case(TOOL, "open_clip_train's `--dataset-type csv`",
         "refused before any work, naming the flag: only webdataset shards are read (never a silent fallback)",
         with_shards("--dataset-type", "csv"), names=lambda ws: "--dataset-type csv", output=lambda ws: None),
    Case(TOOL, "a loss that turns NaN/inf (`--lr 1e6`)",
         "stops before that step touches the weights, naming the step and the last good checkpoint; no NaN on disk",
         _diverges, names=lambda ws: "diverged at step", check=_diverged_check),
    Case(TOOL, "shards whose every image is corrupt", "one-line error naming the shard, before the model is built (was a hang)",
         _all_corrupt, names=lambda ws: str(ws / "in" / "shards"), output=lambda ws: None, timeout=60),
    Case(TOOL, "captions only under an unknown extension (`.caption`)", "one-line error with the skip reasons (was a hang)",
         _caption_extension, names=lambda ws: "no_caption", output=lambda ws: None, timeout=60),
    Case(TOOL, "a zero-byte shard", "one-line error naming it, before the model is built",
         lambda ws: _cut_shard(ws, 0.0), names=lambda ws: str(ws / "in" / "shards" / "shard-000001.tar"),
         output=lambda ws: None),
    Case(TOOL, "a truncated shard", "one-line error naming it, before the model is built",
         lambda ws: _cut_shard(ws, 0.6), names=lambda ws: str(ws / "in" / "shards" / "shard-000001.tar"),
         output=lambda ws: None),
    Case(TOOL, "`sizes.json` promising more samples than a tar holds", "one-line error naming the shard and both counts",
         _sizes_lie, names=lambda ws: "shard-000000.tar"),
    Case(TOOL, "shards of an unfinished build (no manifest.json)", "refused unless `--allow-unfinished-build`",
         _unfinished, names=lambda ws: "--allow-unfinished-build", output=lambda ws: None),
    Case(TOOL, "a few corrupt samples among good ones", "skipped and counted in summary.json", _some_corrupt, rc=0,
         check=_corrupt_counted),
    Case(TOOL, "a truncated `--resume` checkpoint", "one-line error naming it, before the model is built",
         _resume_cut, names=lambda ws: "step_00000002.pt"),
    Case(TOOL, "a zero-byte `--pretrained` file", "one-line error naming it", _pretrained_empty,
         names=lambda ws: str(ws / "in" / "empty.pt")),
    Case(TOOL, "a TorchScript `--pretrained` (zip with `code/`, `constants.pkl`)",
         "refused unless `--allow-torchscript` (torch.jit.load runs code from the file); nothing loaded", _torchscript,
         names=lambda ws: "--allow-torchscript"),
    Case(TOOL, "`--pretrained openai` (a hub tag)", "one-line error: weights come from local files only",
         with_shards("--pretrained", "openai"), names=lambda ws: "openai"),
    Case(TOOL, "`--resume latest` with another `--batch-size`", "refused naming each changed setting unless `--resume-force`",
         lambda ws: (trained(ws), argv(ws, "--resume", "latest", "--batch-size", "4", "--max-steps", "4"))[1],
         names=lambda ws: "batch_size 8 -> 4"),
    Case(TOOL, "a fresh run on a folder holding another run", "refused: continue it with `--resume latest` or use a new folder",
         lambda ws: (trained(ws), argv(ws))[1], names=lambda ws: "--resume latest"),
    Case(TOOL, "a second run on a folder a live run holds", "refused, naming the holder's pid", with_shards(),
         names=lambda ws: f"pid {os.getpid()}", before=_hold_lock),
    Case(TOOL, "`--train-data` that does not exist", "one-line error naming it", lambda ws: argv(ws),
         names=lambda ws: str(ws / "in" / "shards"), output=lambda ws: None),
    Case(TOOL, "SIGTERM during training", "finishes the step, saves a checkpoint, exits 0; `--resume latest` continues",
         _long_run, rc=0, run=lambda ws, a: run_sigterm(ws, a, ws / "out"), check=_stopped_cleanly, timeout=240),
    Case(TOOL, "torchrun killed with -9 (the worker is in its own session)",
         "the worker gets SIGTERM from the kernel: checkpoint, exit 0, nothing left running", _long_run, rc=0,
         run=lambda ws, a: run_torchrun_killed(ws, a, ws / "out"), check=_stopped_cleanly, timeout=240),
]
