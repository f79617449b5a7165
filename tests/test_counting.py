"""Zero-shot counting on DOTA-format data: the format owner, which images are kept, prompts, the metric."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clip_pretrain.evaluate.common import EvalError
from clip_pretrain.evaluate.counting import count_prompts, list_counting_images, score_counting
from rs_common.formats.dota import DotaHeader, DotaObject, parse_label_line, read_label_file

BOX = "1 1 9 1 9 9 1 9"


def png(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), (10, 20, 30)).save(path)


def text(path: Path, body: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body, encoding="utf-8")


def objects(cls: str, n: int, difficult: int = 0) -> str:
    return "".join(f"{BOX} {cls} {difficult}\n" for _ in range(n))


def outcomes(counting) -> dict[str, object]:
    """{image name: (class, count) or the reason it was left out}."""
    kept = {p.name: (c, int(n)) for p, c, n in zip(counting.images, counting.classes, counting.counts)}
    return {**kept, **{p.name: reason for p, reason in counting.left_out_images.items()}}


def balanced(counting) -> bool:
    return (counting.n_listed == len(counting.images) + sum(counting.left_out.values())
            == len(counting.images) + len(counting.left_out_images)
            and len(counting.images) == len(counting.classes) == len(counting.counts))


# ---------------------------------------------------------------- the format owner


def test_label_line_syntax():
    assert parse_label_line("  ") is None
    assert parse_label_line("gsd:null") == DotaHeader("gsd", None)
    assert parse_label_line("GSD: 0.5") == DotaHeader("gsd", 0.5)
    assert parse_label_line("imagesource:GoogleEarth") == DotaHeader("imagesource", "GoogleEarth")
    assert parse_label_line(f"{BOX} small-vehicle") == DotaObject((1, 1, 9, 1, 9, 9, 1, 9), "small-vehicle", False)
    assert parse_label_line(f" {BOX} plane 2 ").difficult
    for bad in ("foo bar", f"{BOX} plane x", f"1_0 {BOX[2:]} plane 0", f"{BOX} plane 0 extra", "source:x"):
        assert parse_label_line(bad).startswith("expected 8 coordinates + class [+ difficult], got ")


def test_read_label_file_reports_every_bad_line(tmp_path):
    path = tmp_path / "a.txt"
    text(path, f"gsd:1\n{BOX} ship 0\nnan 1 9 1 9 9 1 9 ship 0\n\nbad\n")
    found, problems = read_label_file(path)
    assert [o.cls for o in found] == ["ship"]
    assert [p.split(": ", 1)[0] for p in problems] == [f"{path}:3", f"{path}:5"]
    assert read_label_file(tmp_path / "none.txt")[1][0].startswith(f"{tmp_path / 'none.txt'}: cannot read label file")


# ---------------------------------------------------------------- which images are counted


def test_real_dota_samples(shared_data):
    counting = list_counting_images(shared_data / "detection/dota")
    # the two 1024 crops hold 4 planes each (P0004's third is difficult: it counts); P1888 holds 14 small and
    # 50 large vehicles, two classes, so it is left out for that (before its 64 > 10)
    assert outcomes(counting) == {"P0004__1__0___0.png": ("plane", 4), "P2805__1024__0___0.png": ("plane", 4),
                                  "P1888.png": "several_classes"}
    assert [p.name for p in counting.images] == ["P0004__1__0___0.png", "P2805__1024__0___0.png"]
    assert counting.counts.dtype.kind == "i" and counting.n_listed == 3 and balanced(counting)
    assert counting.left_out == Counter(several_classes=1) and counting.orphan_labels == 0


def test_generated_dota_folder(tmp_path):
    root = tmp_path / "dota"
    labels = {
        "one": objects("plane", 1), "ten": objects("storage-tank", 9) + objects("storage-tank", 1, difficult=1),
        "eleven": objects("ship", 11), "mixed": objects("ship", 2) + objects("harbor", 1),
        "empty": "", "header_only": "imagesource:GoogleEarth\ngsd:0.3\n",
        "malformed": objects("ship", 2) + "1 2 3 plane\n", "nested": "gsd:null\n" + objects("small-vehicle", 3),
        "deep/exact": objects("plane", 2), "orphan": objects("plane", 1),
    }
    for stem, body in labels.items():
        text(root / "labelTxt" / f"{stem}.txt", body)
    for name in ("one.png", "ten.jpg", "eleven.png", "mixed.png", "empty.png", "header_only.png", "malformed.png",
                 "nolabel.png", "part1/nested.png", "deep/exact.tif", ".hidden.png"):
        png(root / "images" / name)
    counting = list_counting_images(root)
    assert outcomes(counting) == {
        "one.png": ("plane", 1), "ten.jpg": ("storage-tank", 10), "nested.png": ("small-vehicle", 3),
        "exact.tif": ("plane", 2), "eleven.png": "more_than_max_objects", "mixed.png": "several_classes",
        "empty.png": "no_objects", "header_only.png": "no_objects", "malformed.png": "malformed_label",
        "nolabel.png": "no_label_file",
    }
    rel = [p.relative_to(root / "images").as_posix() for p in counting.images]
    assert rel == ["deep/exact.tif", "one.png", "part1/nested.png", "ten.jpg"]  # sorted by relative path
    assert counting.n_listed == 10 and counting.orphan_labels == 1 and balanced(counting)
    assert counting.left_out == Counter(more_than_max_objects=1, several_classes=1, no_objects=2, malformed_label=1,
                                        no_label_file=1)
    # with a smaller cap the ten leave too
    small = list_counting_images(root, max_count=3)
    assert outcomes(small)["ten.jpg"] == "more_than_max_objects" and small.left_out["more_than_max_objects"] == 2
    assert balanced(small) and small.counts.max() <= 3


def test_ambiguous_stem_is_not_paired(tmp_path):
    root = tmp_path / "dota"
    text(root / "labelTxt" / "a.txt", objects("plane", 1))
    png(root / "images" / "x" / "a.png")
    png(root / "images" / "y" / "a.png")
    counting = list_counting_images(root)
    assert counting.left_out == Counter(no_label_file=2) and not counting.images and balanced(counting)


def test_not_a_dota_folder(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(EvalError, match=f"{re.escape(str(tmp_path))}: not a DOTA folder, no labelTxt/"):
        list_counting_images(tmp_path)
    with pytest.raises(EvalError, match="not found"):
        list_counting_images(tmp_path / "missing")
    with pytest.raises(EvalError, match="max_count"):
        list_counting_images(tmp_path, max_count=0)


# ---------------------------------------------------------------- prompts


def test_prompts_for_storage_tanks():
    prompts = count_prompts("storage-tank")
    assert prompts == [f"a satellite photo of {n} storage tanks." for n in range(1, 11)]
    assert count_prompts("small-vehicle", "{n} {c}s", max_count=2) == ["1 small vehicles", "2 small vehicles"]
    for bad in ("a photo of {c}s.", "a photo of {n} things.", "{n} {c} {x}", "{n} {c"):
        with pytest.raises(EvalError, match="template"):
            count_prompts("plane", bad)


# ---------------------------------------------------------------- the metric


def unit(*rows) -> np.ndarray:
    arr = np.asarray(rows, dtype=np.float32)
    return arr / np.linalg.norm(arr, axis=1, keepdims=True)


def test_score_counting_known_answer_and_ties():
    d = 4
    eye = np.eye(d, dtype=np.float32)
    # plane prompts: N=1 -> e0, N=2 -> e1, N=3 -> e1 (N=2 and N=3 always tie: the lower N wins)
    # ship prompts:  N=1 -> e2, N=2 -> e3, N=3 -> e0
    prompts = {"plane": eye[[0, 1, 1]], "ship": eye[[2, 3, 0]]}
    images = unit([1, 0, 0, 0], [0, 1, 0, 0], [0.1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0.2, 1], [0, 0, 1, 0])
    classes = ["plane", "plane", "plane", "ship", "ship", "ship"]
    counts = np.array([1, 3, 2, 3, 1, 3])
    result = score_counting(images, classes, counts, prompts)
    assert result["predicted"] == [1, 2, 2, 3, 2, 1]
    assert result["n_images"] == 6 and result["max_count"] == 3
    assert result["top1"] == pytest.approx(50.0)
    assert result["mean_abs_error"] == pytest.approx((0 + 1 + 0 + 0 + 1 + 2) / 6)
    assert result["within_1"] == pytest.approx(100 * 5 / 6)
    assert result["per_count"] == {"1": {"n": 2, "top1": 50.0}, "2": {"n": 1, "top1": 100.0},
                                   "3": {"n": 3, "top1": pytest.approx(100 / 3)}}
    assert result["per_class"]["plane"] == {"n": 3, "top1": pytest.approx(200 / 3),
                                            "mean_abs_error": pytest.approx(1 / 3), "within_1": 100.0}
    assert result["per_class"]["ship"]["n"] == 3 and result["per_class"]["ship"]["top1"] == pytest.approx(100 / 3)
    assert result["confusion"] == [[1, 1, 0], [0, 1, 0], [1, 1, 1]]  # [true-1][pred-1]
    assert score_counting(images, classes, counts, prompts) == result  # deterministic


def test_score_counting_checks_its_inputs():
    prompts = {"plane": np.eye(2, dtype=np.float32)}
    images = np.eye(2, dtype=np.float32)
    with pytest.raises(EvalError, match="no prompt embeddings for class"):
        score_counting(images, ["plane", "ship"], np.array([1, 1]), prompts)
    with pytest.raises(EvalError, match="1..2"):
        score_counting(images, ["plane", "plane"], np.array([1, 3]), prompts)
    with pytest.raises(EvalError, match="same images"):
        score_counting(images, ["plane"], np.array([1]), prompts)
    with pytest.raises(EvalError, match="dimension"):
        score_counting(np.eye(3, dtype=np.float32)[:2], ["plane", "plane"], np.array([1, 2]), prompts)
    empty = score_counting(np.zeros((0, 2), np.float32), [], np.zeros(0, np.int64), prompts)
    assert empty["n_images"] == 0 and empty["top1"] is None and empty["confusion"] == [[0, 0], [0, 0]]
