"""Stage 2's command line: GeoChat's scripts/finetune_lora.sh flags (vlm_finetune.llava_flags) beside ours, --resume
latest, warm-up steps computed here, and the projector frozen by default (tiny GeoChat on CPU, 1-2 steps a run)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from rs_common.config import ConfigError, make_config
from tests.test_geochat_finetune import tiny_dirs  # noqa: F401 - the module-scoped tiny GeoChat fixture
from vlm_finetune.llava_flags import LLAVA_FLAGS, map_llava_flags, parse_llava_flags, split_command
from vlm_finetune.train import FinetuneConfig

# GeoChat's scripts/finetune_lora.sh, flag for flag (PROMPT_VERSION=v1); paths are filled in per test
FINETUNE_LORA_SH = """
    --deepspeed {deepspeed} --lora_enable True --model_name_or_path {model} --version v1 --data_path {data}
    --image_folder {images} --vision_tower {tower} --mm_projector_type mlp2x_gelu --pretrain_mm_mlp_adapter {adapter}
    --mm_vision_select_layer -2 --mm_use_im_start_end False --mm_use_im_patch_token False --image_aspect_ratio pad
    --bf16 True --output_dir {output} --num_train_epochs 1 --per_device_train_batch_size 32
    --per_device_eval_batch_size 4 --gradient_accumulation_steps 1 --evaluation_strategy no --save_strategy epoch
    --save_steps 7000 --save_total_limit 1 --learning_rate 2e-4 --weight_decay 0. --warmup_ratio 0.03
    --lr_scheduler_type cosine --logging_steps 1 --tf32 True --model_max_length 2048 --gradient_checkpointing True
    --lazy_preprocess True --dataloader_num_workers 16 --report_to wandb
"""


def _mapped(argv):
    ours, theirs = split_command(argv)
    assert ours == []
    return map_llava_flags(parse_llava_flags(theirs))


@pytest.mark.parametrize("flags, key, value", [
    ("--model_name_or_path m", "model", "m"), ("--data_path d.json", "data", "d.json"), ("--image_folder i", "images", "i"),
    ("--output_dir o", "output", "o"), ("--lora_r 8", "lora_r", 8), ("--lora_alpha 32", "lora_alpha", 32),
    ("--lora_dropout 0.1", "lora_dropout", 0.1), ("--tune_mm_mlp_adapter True", "train_projector", True),
    ("--freeze_mm_mlp_adapter True", "train_projector", False), ("--model_max_length 1024", "max_length", 1024),
    ("--image_aspect_ratio pad", "pad_to_square", True), ("--image_aspect_ratio square", "pad_to_square", False),
    ("--per_device_train_batch_size 32", "batch_size", 32), ("--gradient_accumulation_steps 3", "grad_accum", 3),
    ("--num_train_epochs 2", "epochs", 2.0), ("--max_steps 7", "max_steps", 7), ("--learning_rate 2e-4",
                                                                                  "learning_rate", 2e-4),
    ("--weight_decay 0.", "weight_decay", 0.0), ("--warmup_ratio 0.03", "warmup_ratio", 0.03),
    ("--warmup_steps 0.05", "warmup_ratio", 0.05), ("--warmup_steps 20", "warmup_steps", 20),
    ("--lr_scheduler_type cosine", "lr_scheduler", "cosine"), ("--bf16 True", "bf16", "true"),
    ("--bf16 False", "bf16", "false"), ("--gradient_checkpointing True", "gradient_checkpointing", True),
    ("--deepspeed z.json", "deepspeed", "z.json"), ("--fsdp full_shard", "fsdp", "full_shard"),
    ("--fsdp_config f.json", "fsdp_config", "f.json"), ("--resume_from_checkpoint latest", "resume", "latest"),
    ("--report_to wandb", "report_to", "wandb"), ("--report_to none", "report_to", "none"),
    ("--logging_steps 1", "logging_steps", 1), ("--save_steps 7000", "save_steps", 7000),
    ("--save_total_limit 1", "save_total_limit", 1), ("--dataloader_num_workers 16", "num_workers", 16),
    ("--seed 3", "seed", 3)])
def test_each_geochat_flag_maps_to_our_setting(flags, key, value):
    overrides, trainer = _mapped(["--output_dir", "o", *flags.split()] if "output_dir" not in flags else flags.split())
    assert overrides[key] == value and trainer == {}


def test_every_setting_row_names_a_finetune_config_key_and_unlisted_training_fields_pass_through():
    keys = {f for f in FinetuneConfig.__dataclass_fields__}
    assert all(row.key in keys for row in LLAVA_FLAGS if row.key)
    overrides, trainer = _mapped(["--output_dir", "o", "--tf32", "True", "--save_strategy", "epoch",
                                  "--per_device_eval_batch_size", "4", "--optim", "adamw_torch", "--local_rank=0",
                                  "--lazy_preprocess", "True", "--lora_enable", "True", "--bits", "16"])
    assert overrides == {"output": "o"}
    assert trainer == {"tf32": True, "save_strategy": "epoch", "per_device_eval_batch_size": 4, "optim": "adamw_torch",
                       "local_rank": 0}
    assert split_command(["--model", "m", "--data", "d", "--bf16", "true"]) is None  # ours only: not LLaVA-style


@pytest.mark.parametrize("flags, says", [
    ("--mm_projector_type linear", "mlp2x_gelu only"), ("--lora_enable False", "LoRA is the only"),
    ("--bits 4", "16 only"), ("--version v0", "v1"), ("--image_aspect_ratio anyres", "pad or square"),
    ("--evaluation_strategy steps", "no only"), ("--mm_use_im_start_end True", "False only"),
    ("--report_to all", "none, wandb or tensorboard"), ("--save_steps 0.5", "a number of steps")])
def test_flags_with_no_meaning_here_are_one_line_errors(flags, says, capsys):
    from launch import finetune_geochat as cli

    assert cli.main(["--output_dir", "o", "--data_path", "d", *flags.split()]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --") and says in err[0], err


def test_trainer_args_may_not_set_what_our_settings_set():
    from vlm_finetune.data import FinetuneError
    from vlm_finetune.train_args import check_trainer_args

    check_trainer_args({"tf32": True, "save_strategy": "epoch"})
    with pytest.raises(FinetuneError, match="--learning-rate"):
        check_trainer_args({"learning_rate": 1.0})
    with pytest.raises(FinetuneError, match="not a TrainingArguments field"):
        check_trainer_args({"no_such_field": 1})


def test_warmup_steps_are_computed_and_the_lr_rises_linearly(tmp_path):
    from transformers import get_scheduler

    from vlm_finetune.train_args import steps_per_epoch, total_optimizer_steps, training_arguments, warmup_steps_for

    # 1000 samples, 4 per device, 3 processes, 2 accumulation steps: 250 batches, 84 per process, 42 optimizer steps
    assert steps_per_epoch(1000, 4, world_size=3, grad_accum=2) == 42
    assert steps_per_epoch(1000, 4, world_size=3, grad_accum=5, ceil_accum=False) == 16  # 4.x: 84 // 5
    assert total_optimizer_steps(-1, 2.0, 42) == 84 and total_optimizer_steps(10, 2.0, 42) == 10
    assert warmup_steps_for(0.03, 0, 84) == 3 and warmup_steps_for(0.03, 7, 84) == 7
    assert warmup_steps_for(0.03, 0, 2209) == 67  # GeoChat's recipe on 318k samples / 144
    cfg = make_config(FinetuneConfig, model="m", data="d", images="i", output=str(tmp_path), batch_size=4,
                      grad_accum=2, epochs=2, warmup_ratio=0.1, lr_scheduler="cosine", learning_rate=1e-3)
    args = training_arguments(cfg, bf16=False, samples=100)  # 25 batches -> 13 steps an epoch -> 26 -> 3 warm-up
    assert isinstance(args.warmup_steps, int) and args.warmup_steps == 3 and args.get_warmup_steps(26) == 3
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.learning_rate)
    sched = get_scheduler(args.lr_scheduler_type, opt, num_warmup_steps=args.get_warmup_steps(26), num_training_steps=26)
    lrs = []
    for _ in range(5):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:4] == pytest.approx([0.0, 1e-3 / 3, 2e-3 / 3, 1e-3]) and lrs[4] < 1e-3


# ---------------------------------------------------------------------------------------------------------------
# on the tiny GeoChat: the copied command runs, --resume latest, projector frozen by default
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_run(tiny_dirs, tmp_path_factory):  # noqa: F811
    """One sample of the shared data, GeoChat's mm_projector.bin of the tiny model, a deepspeed json."""
    if not tiny_dirs["instruct"]:
        pytest.skip("shared data absent")
    from safetensors.torch import load_file

    root = tmp_path_factory.mktemp("flags")
    data = root / "train.json"
    data.write_text(json.dumps([r for r in tiny_dirs["instruct"] if r["task"] == "count"][:2]))
    state = load_file(str(tiny_dirs["model"] / "model.safetensors"))
    projector = {k.split("multi_modal_projector.")[1]: v for k, v in state.items() if "multi_modal_projector." in k}
    torch.save({f"model.mm_projector.{i}.{p}": projector[f"linear_{1 + i // 2}.{p}"]
                for i in (0, 2) for p in ("weight", "bias")}, root / "mm_projector.bin")
    (root / "zero2.json").write_text("{}")
    return {"data": data, "adapter": root / "mm_projector.bin", "deepspeed": root / "zero2.json", "root": root,
            "projector": projector}


def _command(tiny_dirs, run, output, **replace):  # noqa: F811
    text = FINETUNE_LORA_SH.format(deepspeed=run["deepspeed"], model=tiny_dirs["model"], data=run["data"],
                                   images=tiny_dirs["data"], tower=tiny_dirs["root"] / "tower", adapter=run["adapter"],
                                   output=output)
    argv = text.split()
    for flag, value in replace.items():
        i = argv.index(f"--{flag}")
        argv[i:i + 2] = [] if value is None else [f"--{flag}", value]
    return argv


def test_the_copied_command_parses_onto_our_settings(tiny_dirs, tiny_run):  # noqa: F811
    from vlm_finetune.finetune_cli import parse_llava_command

    cfg = parse_llava_command(*split_command(_command(tiny_dirs, tiny_run, tiny_run["root"] / "out")))
    assert (cfg.model, cfg.data, cfg.images) == (str(tiny_dirs["model"]), str(tiny_run["data"]), str(tiny_dirs["data"]))
    assert (cfg.lora_r, cfg.lora_alpha, cfg.batch_size, cfg.grad_accum, cfg.learning_rate, cfg.epochs) == (
        64, 16, 32, 1, 2e-4, 1.0)
    assert (cfg.warmup_ratio, cfg.lr_scheduler, cfg.max_length, cfg.bf16, cfg.gradient_checkpointing) == (
        0.03, "cosine", 2048, "true", True)
    assert (cfg.deepspeed, cfg.report_to, cfg.num_workers, cfg.save_total_limit, cfg.pad_to_square) == (
        str(tiny_run["deepspeed"]), "wandb", 16, 1, True)
    assert not cfg.train_projector
    assert cfg.trainer_args == {"per_device_eval_batch_size": 4, "save_strategy": "epoch", "tf32": True}


@pytest.mark.parametrize("flag, value, says", [
    ("mm_vision_select_layer", "-1", "vision_feature_layer is -2"),
    ("vision_tower", "openai/clip-vit-large-patch14-336", "not the tower of --model"),
    ("pretrain_mm_mlp_adapter", "BAD", "is not the projector of --model")])
def test_model_flags_that_do_not_match_the_model_are_one_line_errors(tiny_dirs, tiny_run, flag, value, says,
                                                                     capsys):  # noqa: F811
    from vlm_finetune import finetune_cli

    if value == "BAD":
        bad = torch.load(tiny_run["adapter"], weights_only=True)
        bad["model.mm_projector.0.weight"] = bad["model.mm_projector.0.weight"] + 1
        torch.save(bad, tiny_run["root"] / "bad.bin")
        value = str(tiny_run["root"] / "bad.bin")
    argv = _command(tiny_dirs, tiny_run, tiny_run["root"] / "never", **{flag: value})
    assert finetune_cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"error: --{flag} ") and says in err[-1], err
    assert not (tiny_run["root"] / "never").exists()


def test_finetune_lora_sh_trains_projector_frozen_then_resume_latest(tiny_dirs, tiny_run, capsys):  # noqa: F811
    """The copied command (no deepspeed, wandb or 16 workers on a CPU test machine) trains 1 step; the projector is
    frozen as in GeoChat's script; --resume latest (our flag beside theirs) continues to step 2."""
    from safetensors.torch import load_file

    from launch import finetune_geochat as cli

    out = tiny_run["root"] / "out"
    argv = _command(tiny_dirs, tiny_run, out, deepspeed=None, report_to="none", dataloader_num_workers="0")
    assert cli.main(argv) == 0, capsys.readouterr().err[-3000:]
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert first["steps"] == 1 and (out / "checkpoint-1").is_dir() and first["bf16"]
    saved = json.loads((out / "finetune.json").read_text())["config"]
    assert saved["trainer_args"]["save_strategy"] == "epoch" and saved["learning_rate"] == 2e-4
    merged = load_file(str(out / "merged/model.safetensors"))
    for key, before in tiny_run["projector"].items():
        after = next(v for k, v in merged.items() if k.endswith("multi_modal_projector." + key))
        assert torch.equal(after.float(), before.to(torch.bfloat16).float()), key  # frozen: unchanged (bf16 run)
    assert cli.main([*argv, "--max_steps", "2", "--save_strategy", "steps", "--save_steps", "1",
                     "--resume", "latest"]) == 0, capsys.readouterr().err[-3000:]
    second = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert second["steps"] == 2 and (out / "checkpoint-2").is_dir()


def test_projector_is_trained_with_the_flag(tiny_dirs, tiny_run):  # noqa: F811
    from safetensors.torch import load_file

    from vlm_finetune.train import train

    out = tiny_run["root"] / "trained"
    cfg = make_config(FinetuneConfig, model=str(tiny_dirs["model"]), data=str(tiny_run["data"]),
                      images=str(tiny_dirs["data"]), output=str(out), max_steps=1, batch_size=2, num_workers=0,
                      learning_rate=1e-2, warmup_ratio=0.0, bf16="false", train_projector=True, max_length=512)
    assert train(cfg)["steps"] == 1
    merged = load_file(str(out / "merged/model.safetensors"))
    changed = [key for key, before in tiny_run["projector"].items()
               if not torch.equal(next(v for k, v in merged.items() if k.endswith("multi_modal_projector." + key)),
                                  before)]
    assert changed, "no projector tensor changed with train_projector true"


def test_resume_latest_and_last_are_the_same_word(tmp_path):
    from vlm_finetune.data import FinetuneError
    from vlm_finetune.train import resume_checkpoint

    for word in ("latest", "last"):
        cfg = make_config(FinetuneConfig, model="m", data="d", images="i", output=str(tmp_path), resume=word)
        with pytest.raises(FinetuneError, match=f"--resume {word}: no checkpoint"):
            resume_checkpoint(cfg)
        (tmp_path / "checkpoint-3").mkdir(exist_ok=True)
        assert resume_checkpoint(cfg).endswith("checkpoint-3")
        (tmp_path / "checkpoint-3").rmdir()
    with pytest.raises(ConfigError):
        make_config(FinetuneConfig, model="m", data="d", images="i", output="o", warmup_steps=-1)
    assert math.isclose(make_config(FinetuneConfig, model="m", data="d", images="i", output="o").warmup_ratio, 0.03)


def test_readme_llava_flag_table_is_generated_from_the_mapping():
    from vlm_finetune.llava_flags import FLAG_TABLE_END, FLAG_TABLE_START, flag_table_markdown

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert FLAG_TABLE_START in readme and FLAG_TABLE_END in readme, "README lacks the GeoChat/LLaVA flag-table markers"
    current = readme.split(FLAG_TABLE_START, 1)[1].split(FLAG_TABLE_END, 1)[0].strip()
    assert current == flag_table_markdown().strip(), "README table is stale: run `python -m vlm_finetune.llava_flags`"
