"""Zero-shot classification: class-name prompts, template ensembling, accuracy maths, skipped images, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

import clip_pretrain  # noqa: F401 - registers rs-tiny
from clip_pretrain.evaluate.common import EvalError
from clip_pretrain.evaluate.embedding import encode_texts
from clip_pretrain.evaluate.zeroshot import (
    ZeroShotConfig,
    accuracy_metrics,
    class_text_embeddings,
    evaluate_zeroshot,
    list_class_folders,
    normalise_class_name,
)
from clip_pretrain.models import create_clip
from launch import eval_zeroshot as cli


@pytest.fixture(scope="module")
def tiny():
    return create_clip("rs-tiny", device="cpu")


@pytest.mark.parametrize("folder,expected", [
    ("BareLand", "bare land"),
    ("storage_tank", "storage tank"),
    ("storage-tank", "storage tank"),
    ("StorageTanks", "storage tanks"),
    ("DenseResidential", "dense residential"),
    ("airport", "airport"),
    ("ground_track_field", "ground track field"),
    ("Tennis_Court", "tennis court"),
    ("RSLabel", "rs label"),
    ("  odd__name  ", "odd name"),
])
def test_normalise_class_name(folder, expected):
    assert normalise_class_name(folder) == expected


def test_accuracy_metrics_by_hand():
    classes = ["a", "b", "c"]
    scores = np.array([
        [0.9, 0.1, 0.0],  # true a, pred a
        [0.2, 0.5, 0.3],  # true a, pred b (a third)
        [0.1, 0.8, 0.1],  # true b, pred b
        [0.3, 0.3, 0.1],  # true c, tie a/b -> a (lower index); c last
    ])
    labels = np.array([0, 0, 1, 2])
    m = accuracy_metrics(scores, labels, classes)
    assert m["top1"] == 50.0
    assert m["top5_k"] == 3 and m["top5"] == 100.0  # fewer than five classes: top-5 means all of them
    assert m["per_class"] == {"a": 50.0, "b": 100.0, "c": 0.0}
    assert m["mean_per_class"] == pytest.approx(50.0)
    assert m["_confusion"].tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 0]]
    many = accuracy_metrics(np.eye(7)[[1, 2]] * -1.0 + 0.01 * np.arange(7), np.array([1, 2]), list("abcdefg"))
    assert many["top5_k"] == 5 and many["top5"] == 0.0  # the true class is scored lowest


def test_template_ensemble_is_renormalised_mean(tiny):
    prompts = ["bare land", "airport"]
    templates = ["a satellite photo of {}.", "an aerial image of {}."]
    single = class_text_embeddings(tiny.model, tiny.tokenizer, prompts, templates[:1], "cpu")
    np.testing.assert_allclose(single, encode_texts(tiny.model, tiny.tokenizer, ["a satellite photo of bare land.",
                                                                                "a satellite photo of airport."]), atol=1e-6)
    both = class_text_embeddings(tiny.model, tiny.tokenizer, prompts, templates, "cpu")
    per = encode_texts(tiny.model, tiny.tokenizer, [t.format(p) for p in prompts for t in templates]).reshape(2, 2, -1)
    mean = per.mean(axis=1)
    np.testing.assert_allclose(both, mean / np.linalg.norm(mean, axis=1, keepdims=True), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(both, axis=1), 1.0, atol=1e-6)


def make_tree(root, bad: bool = True):
    for cls, color in (("BareLand", (180, 160, 120)), ("storage_tank", (90, 90, 90)), ("Forest", (20, 120, 30))):
        d = root / cls
        d.mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (48, 48), tuple(c + 10 * i for c in color)).save(d / f"{i}.jpg")
    if bad:
        (root / "Forest" / "broken.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    (root / "EmptyClass").mkdir()
    (root / "EmptyClass" / "notes.txt").write_text("no images here")


def test_skips_unreadable_images(tiny, tmp_path):
    make_tree(tmp_path / "data")
    folders = list_class_folders(tmp_path / "data")
    assert folders.classes == ["BareLand", "Forest", "storage_tank"] and folders.empty == ["EmptyClass"]
    cfg = ZeroShotConfig(model="rs-tiny", data=str(tmp_path / "data"), output=str(tmp_path / "out"), workers=0,
                         device="cpu", class_names={"Forest": "woodland"})
    m = evaluate_zeroshot(cfg, bundle=tiny)
    assert m["n_images"] == 9 and m["n_skipped_images"] == 1 and m["skipped"] == {"corrupt_image": 1}
    assert m["class_prompts"] == {"BareLand": "bare land", "Forest": "woodland", "storage_tank": "storage tank"}
    assert m["empty_class_folders"] == ["EmptyClass"] and m["top5_k"] == 3 and m["top5"] == 100.0
    assert (tmp_path / "out" / "confusion_matrix.png").stat().st_size > 1000
    assert len((tmp_path / "out" / "predictions.csv").read_text().splitlines()) == 10
    with pytest.raises(EvalError, match="Meadow"):
        evaluate_zeroshot(ZeroShotConfig(model="rs-tiny", data=str(tmp_path / "data"), output=str(tmp_path / "o2"),
                                         class_names={"Meadow": "meadow"}), bundle=tiny)


def test_cli_on_aid(shared_data, tmp_path, capsys):
    out = tmp_path / "aid"
    rc = cli.main(["--model", "rs-tiny", "--checkpoint", "none", "--data", str(shared_data / "scenes/aid"),
                   "--output", str(out), "--workers", "0", "--device", "cpu", "--batch-size", "150"])
    assert rc == 0
    m = json.loads((out / "metrics.json").read_text())
    for key in ("top1", "top5", "mean_per_class"):
        assert 0.0 <= m[key] <= 100.0
    assert m["n_images"] == 450 and m["n_classes"] == 30 and m["n_skipped_images"] == 0
    assert len(m["per_class"]) == 30 and m["per_class_counts"]["BareLand"] == 15
    assert m["class_prompts"]["BareLand"] == "bare land" and m["templates"] == ["a satellite photo of {}."]
    assert m["top5"] >= m["top1"]
    assert (out / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["n_classes"] == 30


def test_cli_help_templates_and_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0 and "--templates" in capsys.readouterr().out
    missing = tmp_path / "no_such_root"
    assert cli.main(["--model", "rs-tiny", "--data", str(missing)]) == 2
    assert str(missing) in capsys.readouterr().err
    make_tree(tmp_path / "data", bad=False)
    with pytest.raises(SystemExit) as exc:  # a bad config value stops at argument parsing
        cli.main(["--model", "rs-tiny", "--data", str(tmp_path / "data"), "--templates", "no placeholder"])
    assert exc.value.code == 2 and "no placeholder" in capsys.readouterr().err
    out = tmp_path / "out"
    assert cli.main(["--model", "rs-tiny", "--data", str(tmp_path / "data"), "--output", str(out), "--workers", "0",
                     "--templates", "a satellite photo of {}.", "an aerial image of {}.",
                     "--class-names", '{"Forest": "dense forest"}']) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["templates"] == ["a satellite photo of {}.", "an aerial image of {}."]
    assert m["class_prompts"]["Forest"] == "dense forest"
    config = tmp_path / "zs.yaml"
    config.write_text(f"model: rs-tiny\ndata: {tmp_path / 'data'}\noutput: {tmp_path / 'out2'}\nworkers: 0\n")
    assert cli.main(["--config", str(config), "--batch-size", "2"]) == 0
    assert json.loads((tmp_path / "out2" / "metrics.json").read_text())["config"]["batch_size"] == 2


def test_cli_bad_inputs_are_one_line_errors(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "zero.pt").write_bytes(b"")
    make_tree(tmp_path / "data", bad=False)
    base = ["--model", "rs-tiny", "--workers", "0", "--device", "cpu"]
    out = ["--output", str(tmp_path / "out")]
    data = ["--data", str(tmp_path / "data")]
    cases = [
        (["--data", str(tmp_path / "file.txt")] + out, "a file, not a class-folder root"),
        (["--data", str(tmp_path / "empty")] + out, "at least 2 class folders"),
        (data + ["--output", str(tmp_path / "file.txt")], "exists and is not a folder"),
        (data + out + ["--checkpoint", str(tmp_path / "zero.pt")], "zero.pt: empty file"),
        (data + out + ["--checkpoint", str(tmp_path / "empty")], "checkpoint folder holds none of"),
        (data + out + ["--device", "bogus"], "'bogus' is not a device name"),
    ]
    for extra, says in cases:
        assert cli.main(base + extra) == 2, extra
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.startswith("error:")]
        assert "Traceback" not in err and len(lines) == 1 and says in lines[0], (extra, err)
