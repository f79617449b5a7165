"""Stage-1 training under bad input and hostile conditions: clear one-line errors naming the file, found before
the model is built; no hang, no NaN weights on disk, no deleted checkpoint, no second run on a live output, no
orphaned worker after torchrun dies, and a log without repeated steps after a resume."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import torch

import clip_pretrain  # noqa: F401 - registers rs-tiny
from clip_pretrain import train as train_module
from clip_pretrain.checkpoint import ResumeError, atomic_torch_save, load_checkpoint, resolve_resume, save_checkpoint
from clip_pretrain.cli import main as cli_main
from clip_pretrain.config import TrainConfig
from clip_pretrain.data import DataError, ShardStream, check_tars, expand_urls, shard_sizes
from clip_pretrain.models import TORCHSCRIPT_HELP, CheckpointError
from clip_pretrain.train import TrainingDiverged, train
from rs_common.config import ConfigError, load_config
from rs_common.guards import OutputBusyError
from rs_common.files import atomic_write_json
from rs_common.formats.shard_sample import BUILD_MARKER, SHARD_PATTERN
from shards.writer import write_shard
from synthetic.tiny_shards import sample_members, write_tiny_shards
from tests.hostile.processes import HARNESS, LAUNCHER

ROOT = Path(__file__).resolve().parent.parent


class Hang(BaseException):
    """Raised by SIGALRM: a BaseException, so no `except Exception` on the way swallows it."""


@pytest.fixture
def deadline():
    """``deadline(seconds)`` arms an alarm that turns a hang into a test failure instead of a stuck suite."""

    def on_alarm(signum, frame):  # noqa: ANN001
        raise Hang("no result before the deadline: the code hangs")

    old = signal.signal(signal.SIGALRM, on_alarm)
    yield signal.alarm
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return write_tiny_shards(tmp_path_factory.mktemp("tiny") / "shards", n=96, shard_size=32, corrupt=(5,))


@pytest.fixture(scope="module")
def all_corrupt(tmp_path_factory) -> Path:
    return write_tiny_shards(tmp_path_factory.mktemp("bad") / "shards", n=64, shard_size=32, corrupt=tuple(range(64)))


@pytest.fixture(scope="module")
def caption_ext(tmp_path_factory) -> Path:
    """Good images whose captions sit under ``.caption`` (a member this loader does not read)."""
    out = tmp_path_factory.mktemp("capt") / "shards"
    out.mkdir()
    sizes = {}
    for s in range(2):
        samples = [(f"k{i:06d}", {"jpg": sample_members(i)["jpg"], "caption": sample_members(i)["txt"]})
                   for i in range(32 * s, 32 * s + 32)]
        write_shard(out / SHARD_PATTERN.format(s), samples)
        sizes[SHARD_PATTERN.format(s)] = len(samples)
    atomic_write_json(out / "sizes.json", sizes)
    return out


def cfg_for(shards: Path, out: Path, **kw) -> TrainConfig:
    base = dict(train_data=str(shards), model="rs-tiny", batch_size=8, max_steps=6, warmup=2, lr=1e-3, workers=0,
                output=str(out), save_every_steps=100, log_every_steps=1, device="cpu", shuffle_buffer=16)
    base.update(kw)
    return load_config(TrainConfig, overrides=base)


def copy_shards(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def cli(argv: list[str], capsys) -> tuple[int, str]:
    """The CLI in this process: (exit status, stderr)."""
    rc = cli_main(argv)
    return rc, capsys.readouterr().err


def no_model(monkeypatch) -> list[dict]:
    """Make building a model fail loudly, to show an error came from a check made before it; returns the calls."""
    calls: list[dict] = []

    def refuse(*args, **kwargs):
        calls.append(kwargs)
        raise AssertionError("the model was built before the bad input was found")

    monkeypatch.setattr(train_module, "create_clip", refuse)
    return calls


# ---------------------------------------------------------------- settings


@pytest.mark.parametrize("key,value", [
    ("save_every_steps", 0), ("log_every_steps", 0), ("lr", 0), ("lr", -1e-3), ("warmup", -1), ("epochs", 0),
    ("batch_size", 0), ("shuffle_buffer", 0), ("keep_checkpoints", -5), ("grad_clip_norm", -1.0), ("beta1", 1.0),
    ("beta2", -0.1), ("eps", 0), ("max_consecutive_bad_samples", -1), ("workers", -1),
])
def test_out_of_range_settings_are_config_errors(key, value):
    with pytest.raises(ConfigError, match=key):
        load_config(TrainConfig, overrides={key: value})


def test_new_flags_exist_with_their_help():
    from clip_pretrain.cli import build_parser

    text = build_parser().format_help()
    for flag in ("--resume-force", "--allow-unfinished-build", "--allow-torchscript", "--max-consecutive-bad-samples"):
        assert flag in text, flag
    field = TrainConfig.__dataclass_fields__["allow_torchscript"]
    assert field.default is False and field.metadata["help"] == TORCHSCRIPT_HELP
    cfg = load_config(TrainConfig, overrides={"resume_force": "true", "allow_unfinished_build": "true"})
    assert cfg.resume_force and cfg.allow_unfinished_build and not cfg.allow_torchscript


# ---------------------------------------------------------------- checkpoints kept


def test_pruning_never_deletes_latest_and_refuses_negative_keep(tmp_path):
    ckpts = tmp_path / "checkpoints"
    for step in (2, 4, 6):  # a longer earlier run that this one resumed from step 4 of
        save_checkpoint(tmp_path, step, {"step": step}, keep=0)
    (ckpts / "notes.pt").write_bytes(b"the user's")
    with pytest.raises(ValueError, match="keep"):
        save_checkpoint(tmp_path, 5, {"step": 5}, keep=-5)
    save_checkpoint(tmp_path, 5, {"step": 5}, keep=1)
    assert (ckpts / "latest").resolve() == (ckpts / "step_00000005.pt").resolve()
    assert torch.load(ckpts / "latest", weights_only=True)["step"] == 5
    assert sorted(p.name for p in ckpts.iterdir()) == ["latest", "notes.pt", "step_00000005.pt", "step_00000006.pt"]
    assert resolve_resume("latest", tmp_path) == (ckpts / "step_00000005.pt").resolve()  # the last save, not step 6


# ---------------------------------------------------------------- data that cannot train: fast, clear, no hang


def test_undecodable_shards_fail_before_the_model_is_built(all_corrupt, caption_ext, tmp_path, monkeypatch, deadline):
    no_model(monkeypatch)
    deadline(60)
    start = time.perf_counter()
    with pytest.raises(DataError, match=r"shard-000000\.tar.*corrupt_image: 64"):
        train(cfg_for(all_corrupt, tmp_path / "a"))
    with pytest.raises(DataError, match=r"shard-000000\.tar.*no_caption: 64.*\.txt or \.json"):
        train(cfg_for(caption_ext, tmp_path / "b"))
    assert time.perf_counter() - start < 10


def test_stream_stops_after_a_bounded_run_of_undecodable_samples(all_corrupt, caption_ext, tiny, deadline):
    """The loader itself (probe bypassed): no endless refill from samples that never decode."""
    from tests.test_train import _NoTransform

    def stream(shards: Path, **kw) -> ShardStream:
        urls = expand_urls(str(shards))
        return ShardStream(urls, shard_sizes(urls), rank=0, world=1, batch_size=8, seed=0, transform=_NoTransform(),
                           tokenizer=lambda t: torch.zeros(len(t)), shuffle_buffer=8, **kw)

    deadline(60)
    with pytest.raises(DataError, match=r"rank 0, loader slot 0.*corrupt_image: 64"):
        next(iter(stream(all_corrupt)))
    with pytest.raises(DataError, match=r"10 samples in a row.*no_caption: 10"):
        next(iter(stream(caption_ext, max_bad_in_a_row=10)))
    assert next(iter(stream(tiny, max_bad_in_a_row=2)))["images"].shape[0] == 8  # one bad sample alone is fine


def test_zero_byte_and_truncated_shards_are_named(tiny, tmp_path, monkeypatch):
    no_model(monkeypatch)
    zero = copy_shards(tiny, tmp_path / "zero")
    (zero / "shard-000001.tar").write_bytes(b"")
    with pytest.raises(DataError, match=r"zero/shard-000001\.tar: truncated or not a tar shard: empty file"):
        train(cfg_for(zero, tmp_path / "o1"))
    cut = copy_shards(tiny, tmp_path / "cut")
    data = (cut / "shard-000002.tar").read_bytes()
    (cut / "shard-000002.tar").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"cut/shard-000002\.tar: truncated"):
        train(cfg_for(cut, tmp_path / "o2"))


def test_a_whole_tar_without_end_marker_is_accepted(tiny, tmp_path):
    """Some writers omit the two zero blocks: the header walk accepts a tar whose members are all whole."""
    src = tiny / "shard-000000.tar"
    with tarfile.open(src) as tar:
        last = tar.getmembers()[-1]
    end = last.offset_data + -(-last.size // 512) * 512
    no_marker = tmp_path / "shard-000000.tar"
    no_marker.write_bytes(src.read_bytes()[:end])
    check_tars([str(no_marker)])
    torn = tmp_path / "torn.tar"
    torn.write_bytes(src.read_bytes()[: end - 600])
    with pytest.raises(DataError, match="torn.tar"):
        check_tars([str(torn)])


def test_shard_holding_fewer_samples_than_sizes_json_is_an_error(tiny, tmp_path, capsys):
    """Found mid-run inside a loader worker (sizes.json newer than the shard): one line through the CLI."""
    short = copy_shards(tiny, tmp_path / "short")
    write_shard(short / "shard-000001.tar", [(f"s{i:06d}", sample_members(i)) for i in range(20)])
    os.utime(short / "sizes.json")  # sizes.json looks current: only reading the shard shows the difference
    rc, err = cli(["--train-data", str(short), "--model", "rs-tiny", "--batch-size", "4", "--max-steps", "30",
                   "--workers", "2", "--output", str(tmp_path / "o"), "--device", "cpu", "--shuffle-buffer", "4"], capsys)
    assert rc == 2
    line = err.strip().splitlines()[-1]
    assert line.startswith("error: ") and "Traceback" not in err, err[-2000:]
    assert "short/shard-000001.tar: sizes.json says 32 samples but the shard holds 20" in line


def test_shard_changed_after_sizes_json_is_recounted_at_start(tiny, tmp_path, monkeypatch):
    no_model(monkeypatch)
    changed = copy_shards(tiny, tmp_path / "changed")
    time.sleep(0.05)
    write_shard(changed / "shard-000000.tar", [(f"c{i:06d}", sample_members(i)) for i in range(10)])
    with pytest.raises(DataError, match=r"shard-000000\.tar: sizes\.json says 32 samples .* holds 10"):
        train(cfg_for(changed, tmp_path / "o"))


def test_unfinished_build_is_refused_unless_allowed(tiny, tmp_path, monkeypatch):
    unfinished = copy_shards(tiny, tmp_path / "unfinished")
    atomic_write_json(unfinished / BUILD_MARKER, {"tool": "rs-clip-toolkit shard build"})
    calls = no_model(monkeypatch)
    with pytest.raises(DataError, match=r"unfinished: the shard build there has not finished.*--allow-unfinished-build"):
        train(cfg_for(unfinished, tmp_path / "o"))
    assert not calls
    with pytest.raises(AssertionError, match="model was built"):  # allowed: passes every check up to the model
        train(cfg_for(unfinished, tmp_path / "o", allow_unfinished_build=True))
    assert calls and calls[0]["allow_torchscript"] is False


# ---------------------------------------------------------------- checkpoints to resume from


def test_unreadable_resume_checkpoint_is_named_before_the_model(tiny, tmp_path, monkeypatch, capsys):
    no_model(monkeypatch)
    zero, cut = tmp_path / "zero.pt", tmp_path / "cut.pt"
    zero.write_bytes(b"")
    cut.write_bytes(b"PK\x03\x04" + bytes(100))
    for bad in (zero, cut):
        with pytest.raises(CheckpointError, match=f"{bad.name}: not a readable checkpoint"):
            train(cfg_for(tiny, tmp_path / "o", resume=str(bad)))
        rc, err = cli(["--train-data", str(tiny), "--model", "rs-tiny", "--batch-size", "8", "--output",
                       str(tmp_path / "o"), "--device", "cpu", "--resume", str(bad)], capsys)
        assert rc == 2 and err.strip().splitlines()[-1].startswith(f"error: {bad}: not a readable checkpoint")
        assert "Traceback" not in err


def test_resume_with_other_settings_is_refused_unless_forced(tiny, tmp_path, monkeypatch, caplog):
    out = tmp_path / "r"
    train(cfg_for(tiny, out), run_steps=2)
    fewer = tmp_path / "fewer"
    fewer.mkdir()
    for name in ("shard-000000.tar", "shard-000001.tar"):
        shutil.copy(tiny / name, fewer / name)
    calls = no_model(monkeypatch)
    with pytest.raises(ResumeError, match=r"batch_size 8 -> 4; lr 0\.001 -> 0\.002"):
        train(cfg_for(tiny, out, resume="latest", lr=2e-3, batch_size=4))
    with pytest.raises(ResumeError, match=r"train_shards 3 shard\(s\)/96 samples -> 2 shard\(s\)/64 samples.*--resume-force"):
        train(cfg_for(fewer, out, resume="latest"))
    assert not calls
    monkeypatch.undo()
    # settings that do not change the continuation are free to change
    summary = train(cfg_for(tiny, out, resume="latest", workers=1, log_every_steps=2, save_every_steps=50), run_steps=1)
    assert summary["step"] == 3
    with caplog.at_level("WARNING"):
        summary = train(cfg_for(tiny, out, resume="latest", lr=2e-3, resume_force=True))
    assert summary["status"] == "finished" and summary["step"] == 6
    assert "lr 0.001 -> 0.002" in caplog.text


def test_old_checkpoint_without_recorded_settings_still_resumes(tiny, tmp_path):
    out = tmp_path / "old"
    train(cfg_for(tiny, out), run_steps=3)
    path = (out / "checkpoints/latest").resolve()
    state = load_checkpoint(path)
    del state["run_settings"]
    atomic_torch_save(state, path)
    summary = train(cfg_for(tiny, out, resume="latest"))
    assert summary["status"] == "finished" and summary["steps_this_run"] == 3


def test_log_has_each_step_once_after_a_resume_from_an_older_checkpoint(tiny, tmp_path):
    out = tmp_path / "log"
    train(cfg_for(tiny, out, save_every_steps=2, keep_checkpoints=0))
    # as if killed after step 5: the rows of steps 5 and 6 were logged after the step-4 checkpoint
    train(cfg_for(tiny, out, save_every_steps=2, keep_checkpoints=0,
                  resume=str(out / "checkpoints/step_00000004.pt")))
    steps = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


# ---------------------------------------------------------------- divergence


def test_non_finite_loss_stops_before_the_step_with_finite_weights_on_disk(tiny, tmp_path):
    out = tmp_path / "nan"
    with pytest.raises(TrainingDiverged) as err:
        train(cfg_for(tiny, out, lr=1e6, warmup=0, max_steps=30, save_every_steps=1, keep_checkpoints=0))
    message = str(err.value)
    assert "\n" not in message and "--lr" in message and "--grad-clip-norm" in message
    step = int(message.split("at step ")[1].split(":")[0])
    assert 1 < step < 30
    assert f"last good checkpoint: {out / 'checkpoints' / f'step_{step - 1:08d}.pt'}" in message
    assert not (out / "final.safetensors").exists()
    saved = sorted((out / "checkpoints").glob("step_*.pt"))
    assert len(saved) == step - 1  # every applied step was saved; the diverged one was not
    for path in saved:
        for key, value in load_checkpoint(path)["state_dict"].items():
            assert torch.isfinite(value).all(), (path.name, key)


# ---------------------------------------------------------------- one live run per output; workers die with torchrun


def worker_cmd(shards: Path, out: Path) -> list[str]:
    return [sys.executable, str(ROOT / "launch/pretrain_clip.py"), "--train-data", str(shards), "--model", "rs-tiny",
            "--batch-size", "4", "--max-steps", "100000", "--workers", "0", "--output", str(out), "--device", "cpu",
            "--log-every-steps", "1", "--save-every-steps", "100000"]


def wait_for_rows(out: Path, rows: int, timeout: float = 90) -> None:
    log = out / "log.jsonl"
    deadline = time.time() + timeout
    while time.time() < deadline and not (log.exists() and log.read_text().count("\n") >= rows):
        time.sleep(0.2)


def test_second_run_on_a_live_output_is_refused(tiny, tmp_path, capsys):
    out = tmp_path / "busy"
    proc = subprocess.Popen(worker_cmd(tiny, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    try:
        wait_for_rows(out, 1)
        with pytest.raises(OutputBusyError, match=f"pid {proc.pid}"):
            train(cfg_for(tiny, out, resume="latest"))
        rc, err = cli(["--train-data", str(tiny), "--model", "rs-tiny", "--batch-size", "8", "--output", str(out),
                       "--device", "cpu"], capsys)
        assert rc == 2 and f"pid {proc.pid}" in err.strip().splitlines()[-1] and "Traceback" not in err
    finally:
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr.decode()[-2000:]
    assert json.loads(stdout.decode().strip().splitlines()[-1])["status"] == "interrupted"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal and subreaper are Linux's")
def test_worker_stops_with_a_checkpoint_when_its_torchrun_dies(tiny, tmp_path):
    out = tmp_path / "orphan"
    run = subprocess.run([sys.executable, "-c", HARNESS, LAUNCHER, json.dumps(worker_cmd(tiny, out)),
                          str(tmp_path / "worker.err"), str(out / "log.jsonl")],
                         capture_output=True, text=True, timeout=200, cwd=ROOT)
    result = json.loads(run.stdout.strip().splitlines()[-1])
    err = (tmp_path / "worker.err").read_text()
    assert result["rc"] == 0, (result, err[-2000:])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["step"] >= 2
    assert load_checkpoint(out / "checkpoints/latest")["step"] == summary["step"]


def test_stop_flag_stops_when_the_launcher_pid_changes(monkeypatch):
    """Where no parent-death signal arrives, an orphaned torchrun worker still sees its parent pid change."""
    from clip_pretrain.distributed import DistInfo
    from clip_pretrain.train import StopFlag

    info = DistInfo(0, 0, 1, torch.device("cpu"))
    with StopFlag(watch_parent=True) as stop:
        assert stop.any_rank(info, torch.tensor(1.0)) == (False, False)
        assert stop.any_rank(info, torch.tensor(float("nan"))) == (False, True)
        monkeypatch.setattr(os, "getppid", lambda: 1)
        assert stop.any_rank(info) == (True, False) and stop.signal == signal.SIGTERM


def test_a_fresh_run_never_writes_over_another_run(tiny, tmp_path, monkeypatch):
    """Without --resume, an output folder that holds a run's checkpoints is refused (open_clip_train refuses an
    existing experiment too); before any model is built, with the way on named."""
    out = tmp_path / "used"
    train(cfg_for(tiny, out), run_steps=2)
    before = {p.name: p.read_bytes() for p in (out / "checkpoints").glob("step_*.pt")}
    calls = no_model(monkeypatch)
    with pytest.raises(ResumeError, match="already holds a training run.*--resume latest"):
        train(cfg_for(tiny, out))
    assert not calls
    assert {p.name: p.read_bytes() for p in (out / "checkpoints").glob("step_*.pt")} == before
    # a folder with only the log of a run killed before its first checkpoint starts afresh, its log reset
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "log.jsonl").write_text('{"step": 1, "loss": 9.0}\n{"step": 2, "loss": 8.0}\n')
    monkeypatch.undo()
    train(cfg_for(tiny, fresh, max_steps=2))
    assert [json.loads(x)["step"] for x in (fresh / "log.jsonl").read_text().splitlines()] == [1, 2]
