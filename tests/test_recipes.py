"""The training recipes in configs/: each loads into its config class with the paper's numbers, the DeepSpeed configs,
``--opt adam``, the ``--global-batch-size`` check, the demo's settings coming from its recipes unchanged, and a run
started with ``--config FILE`` keeping the file verbatim as OUTPUT/recipe.yaml (with its path and sha256)."""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import tomllib
from pathlib import Path

import pytest
import torch
import yaml

import clip_pretrain  # noqa: F401 - registers rs-tiny
from clip_pretrain.checkpoint import RESUME_SETTINGS, changed_settings
from clip_pretrain.cli import main as cli_main, parse_train_config
from clip_pretrain.config import TrainConfig
from clip_pretrain.optim import make_optimizer, param_groups
from clip_pretrain.train import train
from rs_common.config import ConfigError, load_config, make_config
from rs_common.recipes import global_batch_problem, record_recipe
from synthetic.tiny_shards import write_tiny_shards
from vlm_finetune.train import FinetuneConfig

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"
STAGE2_PATHS = {"model": "m", "data": "d.json", "images": "i", "output": "o"}  # the user's: flags, not recipe keys
RECIPES = {  # every shipped recipe -> its config class (a new recipe must be added here, so it is tested)
    "remoteclip/rn50.yaml": TrainConfig, "remoteclip/vit-b-32.yaml": TrainConfig,
    "remoteclip/vit-l-14.yaml": TrainConfig, "geochat/lora.yaml": FinetuneConfig,
    "demo/clip-tiny.yaml": TrainConfig, "demo/geochat-tiny.yaml": FinetuneConfig,
}
# RemoteCLIP (REFERENCE.md): model, lr, global batch, the GPUs the recipe's per-GPU batch is laid out for
REMOTECLIP = {"rn50.yaml": ("RN50", 7e-5, 256, 8), "vit-b-32.yaml": ("ViT-B-32", 4e-5, 256, 8),
              "vit-l-14.yaml": ("ViT-L-14", 1e-4, 28, 4)}


def load_recipe(name: str):
    cls = RECIPES[name]
    return load_config(cls, CONFIGS / name, STAGE2_PATHS if cls is FinetuneConfig else None)


def key_line(text: str, key: str) -> str:
    return next(line for line in text.splitlines() if line.strip().startswith(key + ":"))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return write_tiny_shards(tmp_path_factory.mktemp("tiny") / "shards", n=32, shard_size=16)


# ---------------------------------------------------------------- the shipped files


def test_every_shipped_recipe_loads_validates_and_leaves_the_users_paths_to_flags():
    assert sorted(p.relative_to(CONFIGS).as_posix() for p in CONFIGS.rglob("*.yaml")) == sorted(RECIPES)
    for name, cls in RECIPES.items():
        cfg = load_recipe(name)  # unknown keys, bad values and validate() failures raise here
        assert isinstance(cfg, cls)
        text = (CONFIGS / name).read_text()
        assert text.startswith("# "), f"{name}: no header comment"
        users = {"train_data", "pretrained", "output", "resume"} if cls is TrainConfig else set(STAGE2_PATHS)
        assert not users & set(yaml.safe_load(text)), name


@pytest.mark.parametrize("name", sorted(REMOTECLIP))
def test_remoteclip_recipes_hold_the_papers_numbers(name, tmp_path):
    model, lr, global_batch, gpus = REMOTECLIP[name]
    cfg = load_recipe(f"remoteclip/{name}")
    assert (cfg.model, cfg.global_batch_size, cfg.max_steps) == (model, global_batch, 108215)
    assert cfg.lr == pytest.approx(lr, rel=1e-12)
    assert cfg.opt == "adam" and cfg.lr_scheduler == "cosine" and cfg.warmup > 0 and cfg.precision == "amp"
    assert cfg.force_quick_gelu and not cfg.allow_torchscript  # OpenAI weights; TorchScript stays the user's call
    assert cfg.aug.hflip and cfg.aug.rotations == [0, 90, 180, 270] and cfg.aug.crop_scale[0] < cfg.aug.crop_scale[1] == 1
    assert global_batch_problem(cfg.global_batch_size, cfg.batch_size, gpus, cfg.accum_freq) is None
    assert global_batch_problem(cfg.global_batch_size, cfg.batch_size, 1, cfg.accum_freq) is not None
    text = (CONFIGS / "remoteclip" / name).read_text()
    for key in ("model", "force_quick_gelu", "precision", "opt", "lr", "wd", "beta1", "max_steps", "lr_scheduler",
                "warmup", "grad_clip_norm", "crop_scale", "hflip", "rotations"):
        assert "[paper]" in key_line(text, key) or "[open]" in key_line(text, key), (name, key)
    header = text.split("\n\n")[0]
    for flag in ("--train-data", "--pretrained", "--output", f"torchrun --nproc_per_node {gpus}",
                 f"--config configs/remoteclip/{name}"):
        assert flag in header, (name, flag)
    # as the header's command gives it: the recipe, then the user's flags
    parsed, _ = parse_train_config(["--config", str(CONFIGS / "remoteclip" / name), "--train-data", "s", "--pretrained",
                                    "w.bin", "--output", str(tmp_path)])
    assert (parsed.train_data, parsed.pretrained, parsed.lr, parsed.opt) == ("s", "w.bin", cfg.lr, "adam")


def test_geochat_recipe_holds_the_released_scripts_numbers():
    from transformers import TrainingArguments

    cfg = load_recipe("geochat/lora.yaml")
    assert (cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout) == (64, 16, 0.05)
    assert cfg.learning_rate == pytest.approx(2e-4) and cfg.weight_decay == 0
    assert cfg.epochs == 1 and cfg.max_steps == -1 and cfg.warmup_ratio == 0.03 and cfg.lr_scheduler == "cosine"
    assert cfg.bf16 == "true" and cfg.max_length == 2048 and cfg.gradient_checkpointing and cfg.pad_to_square
    assert not cfg.train_projector and cfg.freeze_vision_tower  # frozen, as in the released script
    assert cfg.global_batch_size == 144 == cfg.batch_size * 3 * cfg.grad_accum  # GeoChat's 3 GPUs
    text = (CONFIGS / "geochat/lora.yaml").read_text()
    assert "2e-5" in key_line(text, "learning_rate") and "configs/deepspeed/zero2.json" in text
    for key in ("lora_r", "train_projector", "freeze_vision_tower", "learning_rate", "weight_decay", "epochs",
                "warmup_ratio", "lr_scheduler", "bf16", "max_length"):
        assert "[script]" in key_line(text, key) or "[reference]" in key_line(text, key), key
    # the warm-up ratio reaches the Trainer: vlm_finetune.train passes it as warmup_steps < 1, a fraction of the steps
    assert TrainingArguments(output_dir="unused", warmup_steps=cfg.warmup_ratio).get_warmup_steps(2209) == 67


def test_deepspeed_configs_are_zero_2_and_3_with_auto_values():
    for stage in (2, 3):
        ds = json.loads((CONFIGS / f"deepspeed/zero{stage}.json").read_text())
        assert ds["zero_optimization"]["stage"] == stage
        for key in ("train_micro_batch_size_per_gpu", "train_batch_size", "gradient_accumulation_steps",
                    "gradient_clipping"):
            assert ds[key] == "auto", (stage, key)
        assert ds["bf16"]["enabled"] == ds["fp16"]["enabled"] == "auto"
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extras["deepspeed"] == ["deepspeed"]


def test_configs_ship_with_a_clone():
    """No .gitignore pattern catches a recipe (``git add`` would skip it and a fresh clone would lack it)."""
    files = [p.relative_to(ROOT).as_posix() for p in sorted(CONFIGS.rglob("*")) if p.is_file()]
    try:
        ignored = subprocess.run(["git", "check-ignore", "--no-index", *files], cwd=ROOT, capture_output=True, text=True)
    except FileNotFoundError:
        pytest.skip("no git")
    if ignored.returncode == 128:
        pytest.skip(f"not a git checkout: {ignored.stderr.strip()}")
    assert ignored.returncode == 1 and ignored.stdout == "", ignored.stdout  # 1: none of them is ignored


# ---------------------------------------------------------------- --opt


def test_opt_adam_is_torch_adam_with_l2_on_the_same_groups():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    for kind, cls in (("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)):
        opt = make_optimizer(model, make_config(TrainConfig, opt=kind, wd=0.1, lr=1e-2))
        assert type(opt) is cls
        want = param_groups(model, 0.1)
        assert [[id(p) for p in g["params"]] for g in opt.param_groups] == [[id(p) for p in g["params"]] for g in want]
        assert [g["weight_decay"] for g in opt.param_groups] == [0.0, 0.1]
        assert [g.get("decoupled_weight_decay", cls is torch.optim.AdamW) for g in opt.param_groups] == [kind == "adamw"] * 2
    # with a zero gradient, L2 moves each decayed weight by lr against its sign (Adam normalises wd x w); AdamW
    # shrinks it by lr x wd x w; undecayed parameters stay put in both
    weight, bias = model[0].weight, model[0].bias
    for kind in ("adam", "adamw"):
        w0, b0 = weight.detach().clone(), bias.detach().clone()
        opt = make_optimizer(model, make_config(TrainConfig, opt=kind, wd=0.1, lr=1e-2))
        for p in model.parameters():
            p.grad = torch.zeros_like(p)
        opt.step()
        expected = w0 - 1e-2 * torch.sign(w0) if kind == "adam" else w0 * (1 - 1e-2 * 0.1)
        torch.testing.assert_close(weight.detach(), expected, rtol=0, atol=1e-4)  # Adam's eps on tiny weights
        torch.testing.assert_close(bias.detach(), b0)


def test_opt_is_validated_and_is_a_resume_setting(capsys):
    for value, says in (("sgd", "opt must be one of ('adamw', 'adam')"), ("timm/lamb", "timm optimizers are not")):
        with pytest.raises(ConfigError, match=says.replace("(", r"\(").replace(")", r"\)")):
            make_config(TrainConfig, opt=value)
    with pytest.raises(SystemExit) as exc:
        parse_train_config(["--train-data", "d", "--opt", "lion"])
    assert exc.value.code == 2 and "opt must be one of" in capsys.readouterr().err
    assert "opt" in RESUME_SETTINGS and changed_settings({"opt": "adamw"}, {"opt": "adam"}) == ["opt 'adamw' -> 'adam'"]


# ---------------------------------------------------------------- --global-batch-size


def test_global_batch_mismatch_is_one_line_before_any_work(tmp_path, capsys):
    cfg = make_config(TrainConfig, train_data=str(tmp_path / "no-shards"), batch_size=8, global_batch_size=64,
                      device="cpu", output=str(tmp_path / "out"))
    with pytest.raises(ConfigError) as exc:  # before the (missing) data is looked at
        train(cfg)
    msg = str(exc.value)
    assert msg.startswith("global batch 8 = --batch-size 8 x 1 process(es) x --accum-freq 1, but global_batch_size is 64")
    assert "pass --accum-freq 8 or pass --batch-size 64 to train with 64" in msg and "\n" not in msg
    assert not (tmp_path / "out").exists()
    assert cli_main(["--train-data", str(tmp_path), "--batch-size", "8", "--global-batch-size", "64",
                     "--output", str(tmp_path / "out"), "--device", "cpu"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"error: {msg}"]
    # the fixes for other layouts: 28 over 8 GPUs cannot split evenly, so the process counts that can are named
    problem = global_batch_problem(28, 7, 8, 1)
    assert "run 1, 2, 4, 7, 14, 28 processes, not 8 (e.g. torchrun --nproc_per_node 7 with --batch-size 4)" in problem
    assert global_batch_problem(256, 32, 4, 1).count("pass") == 3  # --accum-freq 2, --batch-size 64, or the opt-out


def test_stage2_global_batch_and_recipe_record(tmp_path, monkeypatch, capsys):
    """lora.yaml on 1 process fails with the fix; on 3 (WORLD_SIZE) it passes, and the launcher copies the recipe
    and hands its record to the summary (the model load and training stubbed: their tests are elsewhere)."""
    import vlm_finetune.train as ft
    from launch import finetune_geochat as cli

    recipe = CONFIGS / "geochat/lora.yaml"
    out = tmp_path / "out"
    argv = ["--config", str(recipe), "--model", "m", "--data", "d.json", "--images", "i", "--output", str(out)]
    monkeypatch.setattr(ft, "check_inputs", lambda cfg: "screened")
    seen = {}
    monkeypatch.setattr(ft, "_train", lambda cfg, screened, resume, callbacks, recipe=None:
                        seen.update(cfg=cfg, recipe=recipe) or {"steps": 0, "recipe": recipe})
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: global batch 48 = --batch-size 16 x 1 process(es) x --grad-accum 3, but global_batch_size "
                   "is 144: pass --grad-accum 9 or pass --batch-size 48 to train with 144, or pass --global-batch-size "
                   "0 to train with 48"]
    assert not out.exists()
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert cli.main(argv) == 0
    data = recipe.read_bytes()
    assert (out / "recipe.yaml").read_bytes() == data
    assert seen["recipe"] == {"source": str(recipe), "sha256": hashlib.sha256(data).hexdigest(),
                              "copy": str(out / "recipe.yaml")}
    assert seen["cfg"] == load_config(FinetuneConfig, recipe, {**STAGE2_PATHS, "output": str(out)})


# ---------------------------------------------------------------- OUTPUT/recipe.yaml


def test_a_run_from_a_recipe_keeps_it_verbatim_and_resumes(tiny, tmp_path, capsys, caplog):
    """2 steps of rs-tiny with --config configs/demo/clip-tiny.yaml (1 step, then a resume): OUTPUT/recipe.yaml is
    the file byte for byte, summary.json and config.yaml record its path and sha256; resuming with the same recipe
    changes nothing, with an edited one warns and keeps the earlier file beside the new one."""
    recipe = CONFIGS / "demo/clip-tiny.yaml"
    out = tmp_path / "run"
    argv = ["--config", str(recipe), "--train-data", str(tiny), "--output", str(out), "--max-steps", "2",
            "--warmup", "1", "--batch-size", "8", "--global-batch-size", "8", "--workers", "0", "--shuffle-buffer", "8",
            "--save-every-steps", "1"]

    def run(*extra: str) -> dict:
        assert cli_main([*argv, *extra]) == 0, capsys.readouterr().err[-2000:]
        return json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    data = recipe.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    first = run("--run-steps", "1")
    assert first["status"] == "interrupted" and (out / "recipe.yaml").read_bytes() == data
    assert first["recipe"] == {"source": str(recipe), "sha256": sha, "copy": str(out / "recipe.yaml")}
    with caplog.at_level(logging.WARNING, logger="rs_common.recipes"):
        second = run("--resume", "latest")
    assert second["status"] == "finished" and second["step"] == 2 and second["recipe"]["sha256"] == sha
    assert json.loads((out / "summary.json").read_text())["recipe"]["sha256"] == sha
    assert not caplog.records and sorted(p.name for p in out.glob("recipe*")) == ["recipe.yaml"]
    config_yaml = (out / "config.yaml").read_text()
    assert config_yaml.splitlines()[1] == f"# sha256 {sha}, copied verbatim to {out / 'recipe.yaml'}"
    assert load_config(TrainConfig, out / "config.yaml") == parse_train_config([*argv, "--resume", "latest"])[0]

    edited = tmp_path / "clip-tiny-edited.yaml"
    edited.write_bytes(data + b"# edited after the run started\n")
    with caplog.at_level(logging.WARNING, logger="rs_common.recipes"):
        third = run("--resume", "latest", "--config", str(edited))
    assert "differs from the recipe this run started with" in caplog.text
    assert (out / "recipe.yaml").read_bytes() == edited.read_bytes() and (out / f"recipe.{sha[:12]}.yaml").read_bytes() == data
    assert third["recipe"]["source"] == str(edited)


def test_record_recipe_without_a_config(tmp_path, caplog):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("# a recipe\nlr: 1.0e-3\n")
    out = tmp_path / "out"
    out.mkdir()
    assert record_recipe(None, out, resuming=False) is None and not list(out.iterdir())
    record = record_recipe(recipe, out, resuming=False)
    sha = record["sha256"]
    with caplog.at_level(logging.WARNING, logger="rs_common.recipes"):  # continued without --config: warn, keep
        again = record_recipe(None, out, resuming=True)
    assert "without --config" in caplog.text and again["sha256"] == sha and again["source"] is None
    assert (out / "recipe.yaml").read_bytes() == recipe.read_bytes()
    assert record_recipe(None, out, resuming=False) is None  # a fresh run: the earlier copy is set aside, not deleted
    assert not (out / "recipe.yaml").exists() and (out / f"recipe.{sha[:12]}.yaml").read_bytes() == recipe.read_bytes()


# ---------------------------------------------------------------- the demo


class Captured(Exception):
    """Raised by the stubbed trainers: what the demo would have trained with."""


def _capture(cfg, *args, **kwargs):
    raise Captured(cfg, kwargs)


@pytest.mark.parametrize("steps", [300, 40])
def test_the_demo_trains_with_its_recipe_and_todays_settings(tmp_path, monkeypatch, steps):
    """The demo's TrainConfig from configs/demo/clip-tiny.yaml equals the one it built in code before the recipes
    (same settings, same seed: the same numbers)."""
    from launch import demo

    monkeypatch.setattr("clip_pretrain.train.train", _capture)
    with pytest.raises(Captured) as exc:
        demo.stage_train(tmp_path, workers=2, steps=steps, seed=0)
    cfg, kwargs = exc.value.args
    data = tmp_path / "data"
    before = load_config(TrainConfig, overrides={  # launch/demo.py's settings before the recipes, verbatim
        "train_data": str(tmp_path / "shards"), "model": "rs-tiny", "batch_size": 32, "lr": 1e-3, "wd": 0.1,
        "warmup": max(1, steps // 10), "max_steps": steps, "workers": 2, "seed": 0, "output": str(tmp_path / "clip"),
        "save_every_steps": max(1, steps // 3), "log_every_steps": 5, "device": "cpu",
        "eval.captions": str(data / "captions" / "dataset.json"), "eval.split": "test",
    })
    assert cfg == before and kwargs["recipe"] == CONFIGS / "demo/clip-tiny.yaml"


def test_the_demo_finetunes_with_its_recipe_and_todays_settings(tmp_path, monkeypatch):
    from launch import demo

    (tmp_path / "geochat").mkdir()
    (tmp_path / "geochat/instruct.json").write_text(json.dumps([{"task": "scene"}] * 10))
    monkeypatch.setattr("vlm_finetune.train.train", _capture)
    with pytest.raises(Captured) as exc:
        demo.stage_finetune(tmp_path)
    cfg, kwargs = exc.value.args
    root = tmp_path / "geochat"
    before = make_config(  # launch/demo.py's settings before the recipes, verbatim
        FinetuneConfig, model=str(root / "model"), data=str(root / "instruct_train.json"), images=str(tmp_path / "data"),
        output=str(root / "finetuned"), max_steps=40, batch_size=2, learning_rate=1e-3, num_workers=0,
        logging_steps=5, save_steps=40, max_length=4400, train_projector=True)  # the old default, now in the recipe
    assert cfg == before and kwargs["recipe"] == CONFIGS / "demo/geochat-tiny.yaml"
