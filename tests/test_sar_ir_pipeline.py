"""Issue 16 end to end on the generated SAR-like and infrared sources (synthetic/sensors.py): stage 0 with the sensor
counted, EarthGPT-format instructions naming the sensor, and a short fine-tune of a tiny GeoChat in each tuning mode."""

from __future__ import annotations

import json

import pytest

from rs_common.config import make_config
from tests.test_geochat_finetune import tiny_dirs  # noqa: F401 - the module-scoped tiny GeoChat fixture
from synthetic.sensors import write_ir_yolo, write_sar_yolo


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("sensors")
    return {"root": root, "sar": write_sar_yolo(root / "sar", n_images=4, size=96),
            "ir": write_ir_yolo(root / "ir", n_images=4, size=96)}


def test_stage0_counts_the_sensor_per_source(sources, tmp_path):
    from shards.cli import main

    out = tmp_path / "shards"
    assert main(["--input", f"yolo:{sources['sar']}", "--input", f"yolo:{sources['ir']}", "--input.sensor", "sar",
                 "infrared", "--output", str(out), "--workers", "1",
                 "--b2c.sensor-templates", '{"sar": "a SAR image with {caption}"}']) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["read"] == report["written"] + sum(report["skipped"].values()) + report["duplicates"] + report["contaminated"]
    assert {name: s["sensor"] for name, s in report["sources"].items()} == {"sar": "sar", "ir": "infrared"}
    assert report["sources"]["sar"]["written"] == 4 and report["sources"]["ir"]["written"] == 4


@pytest.mark.parametrize("tune", ["lora", "unfrozen-attn-norm", "bias"])
def test_earthgpt_records_fine_tune_in_each_mode(sources, tiny_dirs, tmp_path, tune):  # noqa: F811
    from vlm_finetune.instruct import InstructConfig, run_build_instruct
    from vlm_finetune.train import FinetuneConfig, train

    data = tmp_path / "instruct.json"
    run_build_instruct(make_config(InstructConfig, input=[f"yolo:{sources['sar']}"], output=str(data),
                                   image_root=str(sources["root"]), format="earthgpt", name_sensor=True, sensor="sar",
                                   tasks=["grounding", "count", "presence"], seed=0))
    records = json.loads(data.read_text())
    prompts = [t["value"] for r in records for t in r["conversations"] if t["from"] == "human"]
    assert any("SAR image" in p for p in prompts) and any(p.startswith("<image>\nDetect all objects") for p in prompts)
    summary = train(make_config(FinetuneConfig, model=str(tiny_dirs["model"]), data=str(data),
                                images=str(sources["root"]), output=str(tmp_path / "ft"), max_steps=1, batch_size=1,
                                num_workers=0, learning_rate=1e-3, bf16="false", max_length=1024, save_steps=1000,
                                tune=tune))
    written = json.loads((tmp_path / "ft" / "finetune.json").read_text())
    assert summary["steps"] == 1 and written["tune"] == tune and written["trainable_params"] > 0
    assert (tmp_path / "ft" / "merged" / "config.json").exists()
