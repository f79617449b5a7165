"""Stage-1 training: resume exactness, DDP gradient equality, data split, checkpoints, clear errors."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import open_clip
import pytest
import torch
import torch.multiprocessing as tmp_mp

import clip_pretrain  # noqa: F401 - registers rs-tiny
from clip_pretrain.checkpoint import load_checkpoint
from clip_pretrain.config import TrainConfig
from clip_pretrain.data import ShardStream, batches_per_slot, expand_urls, shard_sizes, slot_pieces
from clip_pretrain.models import CheckpointError, create_clip
from clip_pretrain.schedules import cosine_lr
from clip_pretrain.train import train
from rs_common.config import ConfigError, load_config
from synthetic.tiny_shards import write_tiny_shards

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return write_tiny_shards(tmp_path_factory.mktemp("tiny") / "shards", n=96, shard_size=32, corrupt=(5,))


def cfg_for(shards: Path, out: Path, **kw) -> TrainConfig:
    base = dict(train_data=str(shards), model="rs-tiny", batch_size=8, max_steps=6, warmup=2, lr=1e-3, workers=2,
                output=str(out), save_every_steps=100, log_every_steps=1, device="cpu", shuffle_buffer=16)
    base.update(kw)
    return load_config(TrainConfig, overrides=base)


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["state_dict"]


def test_resume_mid_epoch_equals_straight_run(tiny, tmp_path):
    straight = train(cfg_for(tiny, tmp_path / "a"))
    assert straight["status"] == "finished" and straight["step"] == 6
    first = train(cfg_for(tiny, tmp_path / "b"), run_steps=3)  # stops like a SIGTERM would: checkpoint, return
    assert first["status"] == "interrupted" and first["step"] == 3
    assert not (tmp_path / "b" / "final.safetensors").exists()
    second = train(cfg_for(tiny, tmp_path / "b", resume="latest"))
    assert second["status"] == "finished" and second["steps_this_run"] == 3
    a, b = weights(tmp_path / "a/checkpoints/latest"), weights(tmp_path / "b/checkpoints/latest")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)
    la = [json.loads(x)["loss"] for x in (tmp_path / "a/log.jsonl").read_text().splitlines()]
    lb = [json.loads(x)["loss"] for x in (tmp_path / "b/log.jsonl").read_text().splitlines()]
    assert la == pytest.approx(lb, rel=1e-4)


def test_checkpoints_load_safely_and_final_loads_in_open_clip(tiny, tmp_path):
    summary = train(cfg_for(tiny, tmp_path / "r", max_steps=4, save_every_steps=2, keep_checkpoints=0))
    ckpts = sorted(p.name for p in (tmp_path / "r/checkpoints").glob("step_*.pt"))
    assert ckpts == ["step_00000002.pt", "step_00000004.pt"]
    state = torch.load(tmp_path / "r/checkpoints/latest", weights_only=True)
    assert state["step"] == 4 and {"optimizer", "rng", "data", "state_dict"} <= set(state)
    model = open_clip.create_model("rs-tiny", pretrained=summary["final"])
    trained = state["state_dict"]
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, trained[k], msg=k)
    # every --checkpoint form loads through the project's loader too
    for form in (summary["final"], tmp_path / "r/checkpoints/latest", tmp_path / "r/checkpoints/step_00000002.pt"):
        create_clip("rs-tiny", form)
    assert not list((tmp_path / "r").rglob("*.tmp"))


def test_epoch_split_is_disjoint_and_complete(tiny):
    urls = expand_urls(str(tiny))
    sizes = shard_sizes(urls)
    assert sizes == [32, 32, 32]
    for n_slots in (1, 2, 3, 4, 6):
        seen = Counter()
        for slot in range(n_slots):
            for p in slot_pieces(urls, sizes, epoch=1, seed=0, n_slots=n_slots, slot=slot):
                seen.update((p.url, i) for i in range(p.start, p.stop))
        assert len(seen) == 96 and set(seen.values()) == {1}, n_slots


class _NoTransform:
    def __call__(self, image, rng):
        return torch.zeros(1)


def stream_texts(tiny: Path, world: int, batch: int) -> tuple[list[int], list[dict]]:
    urls = expand_urls(str(tiny))
    sizes = shard_sizes(urls)
    texts: list[str] = []
    last: list[dict] = []
    for rank in range(world):
        ds = ShardStream(urls, sizes, rank=rank, world=world, batch_size=batch, seed=0, transform=_NoTransform(),
                         tokenizer=lambda t: texts.extend(t) or torch.zeros(len(t)), shuffle_buffer=8)
        ds.epoch = 3
        n = batches_per_slot(sizes, world, batch)
        batches = list(itertools.islice(iter(ds), n + 1))  # the stream runs on into the next epoch
        assert [b["epoch"] for b in batches] == [3] * n + [4]
        last.append(batches[n - 1]["skipped"])
        del texts[-batch:]  # the next epoch's first batch
    return [int(t.rsplit("#", 1)[1].rstrip(".")) for t in texts], last


def test_ranks_and_workers_see_no_duplicate_within_an_epoch(tiny):
    ids, skipped = stream_texts(tiny, world=2, batch=5)  # 48 per rank: 9 batches + 3 spare samples
    assert len(ids) == len(set(ids)) == 2 * 9 * 5
    assert 5 not in ids  # the corrupt sample: skipped (or among the spares)
    # no spare sample at all (48 = 12 x 4): the slot reuses one of its own samples, and says so
    ids, skipped = stream_texts(tiny, world=2, batch=4)
    assert len(ids) == 96 and len(set(ids)) == 95
    assert 5 not in ids and sum(s.get("corrupt_image", 0) for s in skipped) == 1
    assert sum(s.get("reused_to_fill_batch", 0) for s in skipped) == 1


def test_bad_samples_are_skipped_and_counted(tiny, tmp_path):
    summary = train(cfg_for(tiny, tmp_path / "s", max_steps=12, batch_size=8, workers=0))
    assert summary["skipped"].get("corrupt_image", 0) >= 1


def test_cosine_schedule():
    assert cosine_lr(0, 1.0, 10, 100) == pytest.approx(0.1)
    assert cosine_lr(9, 1.0, 10, 100) == pytest.approx(1.0)
    assert cosine_lr(10, 1.0, 10, 100) == pytest.approx(1.0)
    assert cosine_lr(55, 1.0, 10, 100) == pytest.approx(0.5)
    assert cosine_lr(100, 1.0, 10, 100) == pytest.approx(0.0, abs=1e-12)


def test_bad_config_and_weights_are_clear_errors(tiny, tmp_path):
    with pytest.raises(ConfigError, match="local_loss and gather_with_grad"):
        load_config(TrainConfig, overrides={"local_loss": "true", "gather_with_grad": "false"})
    with pytest.raises(ConfigError, match="precision"):
        load_config(TrainConfig, overrides={"precision": "fp8"})
    with pytest.raises(CheckpointError, match="hub tag"):
        create_clip("ViT-B-32", "openai")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="bad.pt"):
        create_clip("rs-tiny", bad)
    with pytest.raises(ValueError, match="too few"):
        train(cfg_for(tiny, tmp_path / "t", batch_size=64, workers=2))


# ---------------------------------------------------------------- DDP: 2 gloo processes == 1 process


def ddp_rs_tiny(rank: int, world: int, init_file: str):
    """In a spawned gloo process: (rs-tiny seeded 0, its DDP wrapper, ClipLoss with local loss + gather with grad)."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.manual_seed(0)
    model = open_clip.create_model("rs-tiny", output_dict=True)
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    return model, ddp, open_clip.ClipLoss(local_loss=True, gather_with_grad=True, rank=rank, world_size=world)


def _ddp_grads(rank: int, world: int, init_file: str, batch: dict, out: str) -> None:
    model, ddp, loss_fn = ddp_rs_tiny(rank, world, init_file)
    n = batch["images"].shape[0] // world
    part = slice(rank * n, (rank + 1) * n)
    out_dict = ddp(batch["images"][part], batch["texts"][part])
    loss_fn(out_dict["image_features"], out_dict["text_features"], out_dict["logit_scale"]).backward()
    if rank == 0:
        torch.save({k: p.grad for k, p in model.named_parameters() if p.grad is not None}, out)
    torch.distributed.destroy_process_group()


def test_two_process_gradient_equals_single_process(tmp_path):
    g = torch.Generator().manual_seed(1)
    tokenizer = open_clip.get_tokenizer("rs-tiny")
    batch = {"images": torch.randn(8, 3, 64, 64, generator=g), "texts": tokenizer([f"caption number {i}" for i in range(8)])}
    torch.manual_seed(0)
    model = open_clip.create_model("rs-tiny", output_dict=True)
    out = model(batch["images"], batch["texts"])
    open_clip.ClipLoss()(out["image_features"], out["text_features"], out["logit_scale"]).backward()
    single = {k: p.grad for k, p in model.named_parameters() if p.grad is not None}
    tmp_mp.spawn(_ddp_grads, args=(2, str(tmp_path / "init"), batch, str(tmp_path / "g.pt")), nprocs=2, join=True)
    multi = torch.load(tmp_path / "g.pt", weights_only=True)
    assert single.keys() == multi.keys()
    for k in single:
        torch.testing.assert_close(multi[k], single[k], rtol=1e-4, atol=1e-6, msg=k)


# ---------------------------------------------------------------- the CLI and SIGTERM


def test_cli_sigterm_saves_and_exits_cleanly(tiny, tmp_path):
    out = tmp_path / "sig"
    cmd = [sys.executable, str(ROOT / "launch/pretrain_clip.py"), "--train-data", str(tiny), "--model", "rs-tiny",
           "--batch-size", "4", "--max-steps", "100000", "--workers", "0", "--output", str(out), "--device", "cpu",
           "--log-every-steps", "1", "--save-every-steps", "100000"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    deadline = time.time() + 120
    while time.time() < deadline and not ((out / "log.jsonl").exists() and (out / "log.jsonl").read_text().count("\n") >= 2):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr.decode()[-2000:]
    summary = json.loads(stdout.decode().strip().splitlines()[-1])
    assert summary["status"] == "interrupted" and summary["step"] >= 2
    assert load_checkpoint(out / "checkpoints/latest")["step"] == summary["step"]


def test_cli_help_and_bad_flag():
    run = subprocess.run([sys.executable, str(ROOT / "launch/pretrain_clip.py"), "--help"], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0 and "--train-data" in run.stdout and "--resume" in run.stdout and "--local-loss" in run.stdout
    run = subprocess.run([sys.executable, str(ROOT / "launch/pretrain_clip.py"), "--train-data", "x", "--precision", "fp8"],
                         capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 2 and "precision" in run.stderr


# ---------------------------------------------------------------- learning on real samples


def test_tiny_model_memorises_the_real_caption_samples(shared_data, tmp_path):
    """ucm + sydney + dota_p1888 train splits -> shards -> 150 CPU steps -> training-set retrieval far above a
    random-init model's (memorisation shows the loop learns; the figures go to the notes)."""
    from clip_pretrain.evaluate.retrieval import RetrievalEvalConfig, evaluate_retrieval
    from shards.cli import main as build_main

    shards = tmp_path / "shards"
    assert build_main(["--input", f"captions:{shared_data / 'captions/ucm'}", "--input", f"captions:{shared_data / 'captions/sydney'}",
                       "--input", f"captions:{shared_data / 'captions/dota_p1888'}", "--output", str(shards),
                       "--shard-size", "16", "--workers", "0", "--no-progress"]) == 0
    summary = train(cfg_for(shards, tmp_path / "clip", max_steps=150, batch_size=8, workers=0, lr=1e-3, warmup=10, wd=0.1,
                            log_every_steps=50, save_every_steps=1000, **{"eval.shards": str(shards), "aug.crop_scale": "0.8,1.0"}))
    trained = summary["eval"]
    baseline = evaluate_retrieval(RetrievalEvalConfig(model="rs-tiny", shards=str(shards), output=str(tmp_path / "rand"),
                                                      device="cpu", workers=0, report_queries=0))
    assert trained["n_images"] == baseline["n_images"] == 42
    assert trained["mean_recall"] > 40 and trained["mean_recall"] > 3 * baseline["mean_recall"], (trained, baseline)


def test_shard_sizes_counted_when_sizes_json_is_missing(tiny, tmp_path):
    import shutil

    for p in tiny.glob("shard-*.tar"):
        shutil.copy(p, tmp_path / p.name)
    assert shard_sizes(expand_urls(str(tmp_path))) == shard_sizes(expand_urls(str(tiny))) == [32, 32, 32]
    assert expand_urls(str(tmp_path / "shard-{000000..000001}.tar")) == [str(tmp_path / "shard-000000.tar"), str(tmp_path / "shard-000001.tar")]
    with pytest.raises(Exception, match="not found"):
        expand_urls(str(tmp_path / "shard-{000000..000009}.tar"))


def test_pretrained_may_be_a_checkpoint_folder(tmp_path):
    """A downloaded open_clip hub snapshot (or a run dir) can be passed as --pretrained."""
    from clip_pretrain.checkpoint import save_safetensors

    bundle = create_clip("rs-tiny")
    snapshot = tmp_path / "snapshot"
    snapshot.mkdir()
    save_safetensors(bundle.model.state_dict(), snapshot / "open_clip_model.safetensors")
    loaded = create_clip("rs-tiny", snapshot)
    for k, v in bundle.model.state_dict().items():
        torch.testing.assert_close(loaded.model.state_dict()[k], v)
    with pytest.raises(CheckpointError, match="folder holds none"):
        create_clip("rs-tiny", tmp_path)
