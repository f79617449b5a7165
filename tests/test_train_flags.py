"""open_clip_train's flags on stage-1 training: the flag mapping, gradient accumulation (same gradient as the big
batch, alone and under DDP, exact resume), evaluation during training, tower locking, the LR schedulers against
open_clip_train's own, half precisions, TensorBoard, one wandb run across a resume, and config.yaml."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from contextlib import nullcontext
from pathlib import Path

import open_clip
import pytest
import torch
import torch.multiprocessing as tmp_mp
from PIL import Image

import clip_pretrain  # noqa: F401 - registers rs-tiny
from clip_pretrain.checkpoint import load_checkpoint, save_safetensors
from clip_pretrain.cli import OPEN_CLIP_FLAGS, default_run_name, main as cli_main, parse_train_config
from clip_pretrain.config import TrainConfig
from clip_pretrain.data import ShardStream, expand_urls, resampled_pieces, shard_sizes, slot_pieces
from clip_pretrain.optim import param_groups
from clip_pretrain.report import read_log
from clip_pretrain.run_log import write_config
from clip_pretrain.schedules import const_cooldown_lr, const_lr, cosine_lr
from clip_pretrain.train import accumulate_gradients, train
from clip_pretrain.train_eval import EvalPlan
from rs_common.config import load_config
from synthetic.tiny_shards import COLOURS, sample_members, write_tiny_shards
from tests.test_train import _NoTransform, cfg_for, ddp_rs_tiny, weights

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return write_tiny_shards(tmp_path_factory.mktemp("tiny") / "shards", n=96, shard_size=32, corrupt=(5,))


@pytest.fixture(scope="module")
def classes(tmp_path_factory) -> Path:
    """A zero-shot class-folder set: <colour>/<image>, four images per colour."""
    root = tmp_path_factory.mktemp("zs") / "classes"
    for i in range(16):
        folder = root / list(COLOURS)[i % len(COLOURS)]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i:03d}.jpg").write_bytes(sample_members(i, seed=1)["jpg"])
    return root


def random_batch(n: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    tokenizer = open_clip.get_tokenizer("rs-tiny")
    return torch.randn(n, 3, 64, 64, generator=g), tokenizer([f"caption number {i} of {n}" for i in range(n)])


def grads_of(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}


def max_abs_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max((a[k] - b[k]).abs().max().item() for k in a)


# ---------------------------------------------------------------- --accum-freq


def test_accum_freq_gradient_and_step_equal_the_big_batch():
    """batch 8 x accum 2 == batch 16 x accum 1 on the same 16 samples: the gradient (logit_scale's included) and the
    weights after one AdamW step."""
    images, texts = random_batch(16)
    runs = {}
    for name, micro in (("big", [(images, texts)]), ("accum", [(images[:8], texts[:8]), (images[8:], texts[8:])])):
        torch.manual_seed(0)
        model = open_clip.create_model("rs-tiny", output_dict=True)
        runs["init"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        losses = accumulate_gradients(model, open_clip.ClipLoss(), micro, nullcontext, lambda loss: loss.backward())
        grads = grads_of(model)
        optimizer = torch.optim.AdamW(param_groups(model, 0.2), lr=1e-3, betas=(0.9, 0.98), eps=1e-6)
        optimizer.step()
        runs[name] = (losses, grads, {k: v.detach().clone() for k, v in model.state_dict().items()})
    (big_loss, big_grads, big_w), (acc_loss, acc_grads, acc_w) = runs["big"], runs["accum"]
    assert len(acc_loss) == 2 and acc_loss.tolist() == pytest.approx([big_loss.item()] * 2, rel=1e-5)
    assert big_grads.keys() == acc_grads.keys() and "logit_scale" in big_grads
    diff = max_abs_diff(big_grads, acc_grads)
    assert diff < 1e-6, diff
    for k in big_grads:
        torch.testing.assert_close(acc_grads[k], big_grads[k], rtol=1e-4, atol=1e-7, msg=k)
    # AdamW's first step is lr * g / (|g| + eps): float32 summation noise in a gradient near eps shows up at ~1e-6
    # of a 1e-3 step (1.5e-6 at most here), hence 1e-5 for the weights
    for k in big_w:
        torch.testing.assert_close(acc_w[k], big_w[k], rtol=1e-5, atol=1e-5, msg=k)
    assert any(not torch.equal(acc_w[k], before) for k, before in runs["init"].items())


def _ddp_accum_grads(rank: int, world: int, init_file: str, images, texts, out: str) -> None:
    model, ddp, loss_fn = ddp_rs_tiny(rank, world, init_file)
    mine = slice(rank * 8, rank * 8 + 8)
    imgs, txts = images[mine], texts[mine]
    accumulate_gradients(ddp, loss_fn, [(imgs[:4], txts[:4]), (imgs[4:], txts[4:])], nullcontext,
                         lambda loss: loss.backward())
    if rank == 0:
        torch.save(grads_of(model), out)
    torch.distributed.destroy_process_group()


def test_accum_freq_under_ddp_equals_one_process_big_batch(tmp_path):
    """2 gloo processes x batch 4 x accum 2 (local_loss + gather_with_grad, no_sync on the first pass) == one
    process with the 16 samples at once."""
    images, texts = random_batch(16, seed=2)
    torch.manual_seed(0)
    model = open_clip.create_model("rs-tiny", output_dict=True)
    accumulate_gradients(model, open_clip.ClipLoss(), [(images, texts)], nullcontext, lambda loss: loss.backward())
    single = grads_of(model)
    tmp_mp.spawn(_ddp_accum_grads, args=(2, str(tmp_path / "init"), images, texts, str(tmp_path / "g.pt")), nprocs=2,
                 join=True)
    multi = torch.load(tmp_path / "g.pt", weights_only=True)
    assert single.keys() == multi.keys()
    for k in single:
        torch.testing.assert_close(multi[k], single[k], rtol=1e-4, atol=1e-6, msg=k)


def test_accum_freq_resume_across_an_epoch_end_is_exact(tiny, tmp_path):
    """accum 3 over 10 loader batches an epoch: 3 steps an epoch, one batch dropped at its end; a run stopped at
    step 2 and resumed equals the straight run, across the epoch end."""
    kw = dict(accum_freq=3, batch_size=4, train_num_samples=40, max_steps=4, workers=2)
    straight = train(cfg_for(tiny, tmp_path / "a", **kw))
    assert straight["steps_per_epoch"] == 3 and straight["step"] == 4 and straight["epoch"] == 1
    train(cfg_for(tiny, tmp_path / "b", **kw), run_steps=2)
    assert load_checkpoint(tmp_path / "b/checkpoints/latest")["step_in_epoch"] == 2
    resumed = train(cfg_for(tiny, tmp_path / "b", resume="latest", **kw))
    assert resumed["steps_this_run"] == 2
    a, b = weights(tmp_path / "a/checkpoints/latest"), weights(tmp_path / "b/checkpoints/latest")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)
    la = [r["loss"] for r in read_log(tmp_path / "a/log.jsonl")]
    lb = [r["loss"] for r in read_log(tmp_path / "b/log.jsonl")]
    assert len(la) == 4 and la == pytest.approx(lb, rel=1e-4)


# ---------------------------------------------------------------- --lr-scheduler


def test_lr_schedulers_match_open_clip_train():
    from open_clip_train import scheduler as oct_scheduler

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    base, warmup, total = 1e-3, 10, 100
    steps = (0, 5, 9, 10, 11, 50, 69, 70, 71, 85, 99)
    theirs = oct_scheduler.cosine_lr(optimizer, base, warmup, total)
    assert [cosine_lr(s, base, warmup, total) for s in steps] == pytest.approx([theirs(s) for s in steps], rel=1e-12)
    theirs = oct_scheduler.const_lr(optimizer, base, warmup, total)
    assert [const_lr(s, base, warmup) for s in steps] == pytest.approx([theirs(s) for s in steps], rel=1e-12)
    for power, end in ((1.0, 0.0), (2.0, 1e-5), (0.5, 3e-4)):
        theirs = oct_scheduler.const_lr_cooldown(optimizer, base, warmup, total, 30, power, end)
        ours = [const_cooldown_lr(s, base, warmup, total, 30, power, end) for s in steps]
        assert ours == pytest.approx([theirs(s) for s in steps], rel=1e-12), (power, end)
        assert ours[6] == base and ours[-1] < base  # constant up to the cooldown (step 70), decaying in it


# ---------------------------------------------------------------- --lock-image / --lock-text


def test_locked_towers_do_not_change_and_the_rest_trains(tiny, tmp_path):
    """--lock-image + --lock-text --lock-text-unlocked-layers 1 (the projection) for 2 steps: the locked
    parameters are bit-identical, every trainable one moved; without --lock-text-freeze-layer-norm the text
    tower's LayerNorms train."""
    torch.manual_seed(3)
    init = open_clip.create_model("rs-tiny", output_dict=True)
    save_safetensors(init.state_dict(), tmp_path / "init.safetensors")
    expected = open_clip.create_model("rs-tiny", output_dict=True)  # what open_clip itself locks
    expected.lock_image_tower(unlocked_groups=0)
    expected.lock_text_tower(unlocked_layers=1)
    text_norms = {f"{m}.{p}" for m, mod in expected.named_modules() if isinstance(mod, torch.nn.LayerNorm)
                  and not m.startswith("visual") for p, _ in mod.named_parameters()}
    locked = {k for k, p in expected.named_parameters() if not p.requires_grad} - text_norms
    trainable = {k for k, _ in expected.named_parameters()} - locked
    assert text_norms and any(k.startswith("visual.") for k in locked) and "token_embedding.weight" in locked
    assert {"logit_scale", "text_projection"} <= trainable

    train(cfg_for(tiny, tmp_path / "r", pretrained=str(tmp_path / "init.safetensors"), max_steps=2, workers=0,
                  lock_image=True, lock_text=True, lock_text_unlocked_layers=1))
    before, after = init.state_dict(), weights(tmp_path / "r/checkpoints/latest")
    assert [k for k in locked if not torch.equal(before[k], after[k])] == []
    assert [k for k in trainable if torch.equal(before[k], after[k])] == []


# ---------------------------------------------------------------- --precision


@pytest.mark.parametrize("precision,dtypes", [("pure_bf16", {torch.bfloat16}), ("fp16", {torch.float16, torch.float32})])
def test_half_precisions_train_and_evaluate_on_cpu(tiny, tmp_path, precision, dtypes):
    out = tmp_path / precision
    summary = train(cfg_for(tiny, out, precision=precision, max_steps=2, workers=0, val_data=str(tiny),
                            val_num_samples=16, eval_every_steps=2))
    state = weights(out / "checkpoints/latest")
    assert {v.dtype for v in state.values() if v.is_floating_point()} == dtypes
    assert state["visual.conv1.weight"].dtype == (torch.bfloat16 if precision == "pure_bf16" else torch.float16)
    rows = read_log(out / "log.jsonl")
    assert len(rows) == 2 and all(torch.isfinite(torch.tensor(r["loss"])) for r in rows)
    assert summary["last_eval"]["step"] == 2 and summary["last_eval"]["val_n_images"] == 15


# ---------------------------------------------------------------- --report-to wandb: one run across a resume


def test_resumed_run_continues_the_same_wandb_run(tiny, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "wb"
    train(cfg_for(tiny, out, report_to="wandb", max_steps=2, workers=0), run_steps=1)
    run_id = (out / "wandb_run_id").read_text().strip()
    train(cfg_for(tiny, out, report_to="wandb", max_steps=2, workers=0, resume="latest"))
    assert (out / "wandb_run_id").read_text().strip() == run_id
    runs = sorted((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and {p.name.rsplit("-", 1)[1] for p in runs} == {run_id}, runs
    # a fresh run in another folder is another wandb run
    train(cfg_for(tiny, tmp_path / "other", report_to="wandb", max_steps=1, workers=0))
    assert (tmp_path / "other/wandb_run_id").read_text().strip() != run_id


# ---------------------------------------------------------------- --dataset-resampled


def test_resampled_plan_draws_with_replacement_and_resumes_exactly(tiny):
    urls = expand_urls(str(tiny))
    sizes = shard_sizes(urls)
    for slot in range(3):  # the same share per slot as without resampling, drawn again for each epoch
        plan = resampled_pieces(urls, sizes, epoch=0, seed=0, n_slots=3, slot=slot)
        assert sum(p.stop - p.start for p in plan) == sum(p.stop - p.start for p in slot_pieces(urls, sizes, 0, 0, 3, slot))
        assert plan == resampled_pieces(urls, sizes, epoch=0, seed=0, n_slots=3, slot=slot)
    def drawn(epoch: int) -> list[str]:
        return [p.url for s in range(3) for p in resampled_pieces(urls, sizes, epoch, 0, 3, s)]

    epochs = [drawn(e) for e in range(8)]
    assert any(len(set(d)) < len(d) for d in epochs)  # a shard drawn twice in an epoch: sampling with replacement
    assert len({tuple(d) for d in epochs}) > 1  # drawn anew each epoch

    def stream(**kw) -> ShardStream:
        return ShardStream(urls, sizes, rank=0, world=1, batch_size=8, seed=0, transform=_NoTransform(),
                           tokenizer=lambda t: t, shuffle_buffer=8, resampled=True, **kw)

    straight = [b for _, b in zip(range(6), iter(stream()))]
    resumed = stream()
    resumed.resume_step, resumed.resume_raw = 3, {0: straight[2]["raw_consumed"]}
    assert [b["texts"] for _, b in zip(range(3), iter(resumed))] == [b["texts"] for b in straight[3:]]


# ---------------------------------------------------------------- evaluation schedule, config.yaml


def test_evaluation_schedule_by_epoch_step_and_end():
    plan = EvalPlan(val_set=object(), zeroshot_data="zs", val_frequency=2, zeroshot_frequency=0, every_steps=0)
    assert [s for s in range(1, 11) if plan.due(s, 10, s // 2 if s % 2 == 0 else None)[0]] == [4, 8, 10]
    assert not any(plan.due(s, 10, s // 2 if s % 2 == 0 else None)[1] for s in range(1, 11))  # 0 = never
    plan.every_steps = 3
    assert [s for s in range(1, 11) if plan.due(s, 10, None)[1]] == [3, 6, 9, 10]


def test_config_yaml_loads_back_to_the_same_settings(tmp_path):
    cfg = load_config(TrainConfig, overrides={
        "train_data": "x/shard-{000000..000002}.tar", "lr": "4e-5", "eps": "1e-6", "accum_freq": "2",
        "lr_scheduler": "const-cooldown", "epochs_cooldown": "1", "lr_cooldown_power": "1.5", "report_to": "wandb,tensorboard",
        "aug.crop_scale": "0.8,1.0", "aug.rotations": ["0", "180"], "eval.split": "val", "precision": "amp_bfloat16"})
    path = write_config(cfg, tmp_path)
    assert load_config(TrainConfig, path) == cfg and cfg.precision == "amp_bf16"
    assert not list(tmp_path.glob("*.tmp"))


# ---------------------------------------------------------------- open_clip_train's flags


def test_open_clip_train_flags_map_onto_our_settings(tmp_path, capsys):
    cfg, _ = parse_train_config([
        "--train-data", "d", "--logs", str(tmp_path), "--name", "exp", "--save-frequency", "2", "--log-every-n-steps", "7",
        "--torchcompile", "--wandb-project-name", "proj", "--dataset-type", "webdataset", "--dataset-resampled",
        "--delete-previous-checkpoint", "--save-most-recent", "--accum-freq", "4", "--lock-image", "--lock-text",
        "--lock-text-unlocked-layers", "2", "--lr-scheduler", "const", "--precision", "amp_bfloat16",
        "--report-to", "wandb,tensorboard", "--val-data", "v", "--zeroshot-frequency", "1", "--local-loss",
        "--gather-with-grad"])
    assert cfg.output == str(tmp_path / "exp") and cfg.save_every_epochs == 2 and cfg.log_every_steps == 7
    assert cfg.torch_compile and cfg.wandb_project == "proj" and cfg.dataset_resampled and cfg.keep_checkpoints == 1
    assert cfg.accum_freq == 4 and cfg.lock_image and cfg.lock_text and cfg.lock_text_unlocked_layers == 2
    assert cfg.lr_scheduler == "const" and cfg.precision == "amp_bf16" and cfg.val_data == "v"
    cfg, _ = parse_train_config(["--train-data", "d", "--logs", str(tmp_path), "--model", "rs-tiny", "--lr", "1e-4"])
    assert cfg.output == str(tmp_path / default_run_name(cfg)) == str(tmp_path / "model_rs-tiny-lr_0.0001-b_64-j_2-p_amp")
    for argv, needle in (
        (["--dataset-type", "csv"], "--dataset-type csv: only webdataset"),
        (["--imagenet-val", "/imagenet/val"], "--imagenet-val is not supported.*--zeroshot-data"),
        (["--logs", "l", "--output", "o"], "--output or open_clip_train's --logs/--name, not both"),
        (["--lr-scheduler", "const-cooldown"], "epochs_cooldown >= 1"),
        (["--lr-scheduler", "step"], "lr_scheduler must be one of"),
        (["--report-to", "wandb,mlflow"], r"unknown target\(s\) \['mlflow'\]"),
        (["--accum-freq", "0"], "accum_freq must be >= 1"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            parse_train_config(["--train-data", "d", *argv])
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert exit_info.value.code == 2 and re.search(needle, err), (argv, err)
    text = subprocess.run([sys.executable, str(ROOT / "launch/pretrain_clip.py"), "--help"], capture_output=True,
                          text=True, cwd=ROOT).stdout
    for row in OPEN_CLIP_FLAGS:  # the table is printed, and every mapped flag is an option
        assert row.flag in text.split("open_clip_train flags of another name here")[1], row.flag
        if row.alias:
            assert f"  {row.flag}" in text.split("open_clip_train flags of another name here")[0], row.flag


def test_a_copied_open_clip_train_command_runs(tiny, classes, tmp_path, capsys):
    """An open_clip_train-style command (its flag names only) trains 2 epochs of 2 steps: run dir logs/NAME,
    checkpoints at each epoch end, const-cooldown LR, evaluation every epoch in log.jsonl, TensorBoard and the
    curve, and OUTPUT/config.yaml that --config loads back to the same settings."""
    argv = ["--train-data", str(tiny), "--dataset-type", "webdataset", "--dataset-resampled", "--train-num-samples",
            "32", "--batch-size", "8", "--accum-freq", "2", "--workers", "1", "--epochs", "2", "--model", "rs-tiny",
            "--lr", "1e-3", "--warmup", "1", "--lr-scheduler", "const-cooldown", "--epochs-cooldown", "1",
            "--val-data", str(tiny), "--val-num-samples", "16", "--zeroshot-data", str(classes),
            "--zeroshot-frequency", "1", "--save-frequency", "1", "--log-every-n-steps", "1", "--logs",
            str(tmp_path / "logs"), "--name", "copied", "--report-to", "tensorboard", "--device", "cpu",
            "--local-loss", "--gather-with-grad", "--seed", "0"]
    assert cli_main(argv) == 0, capsys.readouterr().err[-3000:]
    out = tmp_path / "logs/copied"
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["status"] == "finished" and summary["step"] == 4 and summary["steps_per_epoch"] == 2
    assert sorted(p.name for p in (out / "checkpoints").glob("step_*.pt")) == ["step_00000002.pt", "step_00000004.pt"]
    rows = read_log(out / "log.jsonl")
    assert [r["lr"] for r in rows] == pytest.approx([1e-3, 1e-3, 1e-3, 5e-4])
    evals = read_log(out / "log.jsonl", kind="eval")
    assert [e["step"] for e in evals] == [2, 4]
    for e in evals:
        assert {"val_loss", "val_mean_recall", "val_i2t_R@1", "zeroshot_top1", "zeroshot_top5"} <= set(e)
        assert e["val_n_images"] == 15 and 0 <= e["zeroshot_top1"] <= 100 and e["val_loss"] > 0
    assert (out / "eval/step_00000002/zeroshot/metrics.json").is_file()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    assert {"loss", "lr", "val_loss", "zeroshot_top1"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("val_loss")] == [2, 4]
    assert Image.open(out / "loss_curve.png").size[0] > Image.open(out / "loss_curve.png").size[1] * 4  # 4 panels
    cfg, _ = parse_train_config(argv)
    assert load_config(TrainConfig, out / "config.yaml") == cfg
    again, _ = parse_train_config(["--config", str(out / "config.yaml")])
    assert again == cfg


def test_evaluating_during_training_does_not_change_the_run(tiny, tmp_path):
    """Evaluation every step (validation loss + recall) restores every RNG: the weights after 3 steps equal a run
    without evaluation."""
    kw = dict(max_steps=3, workers=0, batch_size=8)
    train(cfg_for(tiny, tmp_path / "plain", **kw))
    summary = train(cfg_for(tiny, tmp_path / "evals", val_data=str(tiny), val_num_samples=16, eval_every_steps=1, **kw))
    assert [r["step"] for r in read_log(tmp_path / "evals/log.jsonl", kind="eval")] == [1, 2, 3]
    assert summary["last_eval"]["step"] == 3
    a, b = weights(tmp_path / "plain/checkpoints/latest"), weights(tmp_path / "evals/checkpoints/latest")
    assert [k for k in a if not torch.equal(a[k], b[k])] == []


def test_readme_flag_table_is_generated_from_the_mapping():
    from clip_pretrain.cli import FLAG_TABLE_END, FLAG_TABLE_START, flag_table_markdown

    readme = (ROOT / "README.md").read_text()
    assert FLAG_TABLE_START in readme and FLAG_TABLE_END in readme, "README lacks the flag-table markers"
    current = readme.split(FLAG_TABLE_START, 1)[1].split(FLAG_TABLE_END, 1)[0].strip()
    assert current == flag_table_markdown().strip(), "README flag table is stale: run `python -m clip_pretrain.cli --flag-table`"
