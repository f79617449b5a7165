"""``build_instruct --format earthgpt``: prompts, normalised boxes, OBB corner order, caption dedup, multi-turn
structure; the parser round-trip; mAP@0.5 (hand-made cases and a brute-force reference); evaluate's detect task."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from tests.hostile.files import dota, image
from vlm_finetune.earthgpt import (
    DETECT,
    dedup_captions,
    order_corners,
    parse_earthgpt_boxes,
)
from vlm_finetune.evaluate import score
from vlm_finetune.instruct import InstructConfig, build_instruct
from vlm_finetune.metrics import detection_map, polygon_iou

W, H = 64, 48
LINES = ("10 10 30 10 30 20 10 20 plane 0\n"
         "40 30 50 25 55 35 45 40 ship 0\n"
         "12 30 20 30 20 40 12 40 plane 0\n")
SINGLE = "Answer the question using a single word or phrase."


def _build(tmp_path, **kw):
    root = dota(tmp_path / "dota", {"P0": LINES}, size=(W, H))
    return {r["task"]: r for r in build_instruct([("dota", str(root))], InstructConfig(format="earthgpt", **kw))}


def _pixels(text):
    return parse_earthgpt_boxes(text).boxes


def test_detection_prompt_and_normalised_hbb(tmp_path):
    recs = _build(tmp_path)
    conv = recs["detect"]["conversations"]
    assert conv[0]["value"] == ("<image>\nDetect all objects shown in the remote sensing image and describe using "
                                "horizontal bounding boxes.")
    lines = conv[1]["value"].split("\n")
    assert lines[0] == "plane: [0.156, 0.208, 0.469, 0.417]"
    boxes = _pixels(conv[1]["value"])
    assert [b.label for b in boxes] == ["plane", "ship", "plane"]
    truth = {"plane": [(10, 10, 30, 20), (12, 30, 20, 40)], "ship": [(40, 25, 55, 40)]}
    got = {"plane": [], "ship": []}
    for b in boxes:
        got[b.label].append(b.coords)
    for cls, pix in truth.items():
        for (x1, y1, x2, y2), c in zip(pix, got[cls]):
            assert c == pytest.approx((x1 / W, y1 / H, x2 / W, y2 / H), abs=5e-4 + 1e-9)  # DECIMALS = 3


def test_obb_corner_order_and_values(tmp_path):
    recs = _build(tmp_path, obb=True)
    assert recs["detect"]["conversations"][0]["value"].endswith("describe using oriented bounding boxes.")
    ship = [b for b in _pixels(recs["detect"]["conversations"][1]["value"]) if b.label == "ship"][0]
    pts = ship.polygon
    expect = {(40 / W, 30 / H), (50 / W, 25 / H), (55 / W, 35 / H), (45 / W, 40 / H)}
    for p in pts:
        assert min(math.dist(p, e) for e in expect) < 1e-3
    assert pts[0] == min(pts, key=lambda p: p[0] ** 2 + p[1] ** 2)
    angles = [math.atan2(p[1] - pts[0][1], p[0] - pts[0][0]) for p in pts[1:]]
    assert angles == sorted(angles)


def test_order_corners_rule_any_input_order():
    square = [(0.5, 0.2), (0.8, 0.5), (0.5, 0.8), (0.2, 0.5)]
    for perm in itertools.permutations(square):
        out = order_corners(perm)
        assert out[0] == (0.5, 0.2) or out[0] == (0.2, 0.5)  # both at distance sqrt(0.29): tie -> smaller y
        assert out[0] == (0.5, 0.2)
        assert out == [(0.5, 0.2), (0.8, 0.5), (0.5, 0.8), (0.2, 0.5)]


def test_vqa_multi_turn_and_grounding_prompts(tmp_path):
    recs = _build(tmp_path, seed=3)
    conv = recs["vqa"]["conversations"]
    assert [t["from"] for t in conv] == ["human", "gpt"] * (len(conv) // 2)
    assert conv[0]["value"].startswith("<image>\n")
    assert all("<image>" not in t["value"] for t in conv[1:])
    assert conv[0]["value"] == f"<image>\nHow many planes are there in this remote sensing image? {SINGLE}"
    assert conv[1]["value"] == "2"
    assert all(t["value"].endswith(SINGLE) for t in conv[0::2])
    assert len(recs["vqa"]["tasks"]) == len(conv) // 2
    refer = recs["refer"]["conversations"]
    assert refer[0]["value"].startswith("<image>\nOutput the horizontal bounding box of the region this sentence "
                                        "describes in this remote sensing image: the ")
    assert len(_pixels(refer[1]["value"])) == 1
    region = recs["region_caption"]["conversations"][0]["value"]
    assert len(_pixels(region)) == 1 and region.startswith("<image>\nGive a short description of the region [")


def test_sensor_named(tmp_path):
    recs = _build(tmp_path, name_sensor=True, sensor="sar")
    assert recs["detect"]["conversations"][0]["value"] == (
        "<image>\nDetect all objects shown in the SAR image and describe using horizontal bounding boxes.")
    assert "this SAR image?" in recs["vqa"]["conversations"][0]["value"]
    plain = _build(tmp_path / "b", sensor="sar")  # sensor given but not asked for: unchanged prompts
    assert "remote sensing image" in plain["detect"]["conversations"][0]["value"]


def test_classification_and_captions(tmp_path):
    for cls in ("farmland", "harbor"):
        image(tmp_path / "scenes" / cls / f"{cls}1.png")
    recs = build_instruct([("folders", str(tmp_path / "scenes"))], InstructConfig(format="earthgpt"))
    assert {r["conversations"][0]["value"] for r in recs} == {
        "<image>\nWhat is the category of this remote sensing image? " + SINGLE}
    assert sorted(r["conversations"][1]["value"] for r in recs) == ["farmland", "harbor"]
    caps = dedup_captions(["A plane.", "a  plane", "Two ships.", "", "two ships", "A road"])
    assert caps == ["A plane.", "Two ships.", "A road"]


def test_caption_conversation(tmp_path):
    from vlm_finetune.earthgpt import ImageView, caption_record

    view = ImageView("s/x", "x.png", 10, 10, [], {}, str, None)
    rec = caption_record(view, ["A plane.", "a plane", "Two ships near a dock."], "this remote sensing image")
    conv = rec["conversations"]
    assert len(conv) == 4 and conv[1]["value"] == "A plane." and conv[3]["value"] == "Two ships near a dock."
    assert conv[0]["value"].startswith("<image>\n") and "<image>" not in conv[2]["value"]


def test_geochat_default_unchanged(tmp_path):
    root = dota(tmp_path / "dota", {"P0": LINES}, size=(W, H))
    a = build_instruct([("dota", str(root))], InstructConfig())
    b = build_instruct([("dota", str(root))], InstructConfig(format="geochat", obb=True, name_sensor=True))
    assert a == b and any(r["conversations"][0]["value"].startswith("<image>\n[refer]") for r in a)


def test_parser_round_trip_and_malformed():
    text = "plane: [0.1, 0.2, 0.3, 0.4]\nstorage tank: [0.1, 0.1, 0.5, 0.1, 0.5, 0.6, 0.1, 0.6]\nship: [0.1, 0.2]\nx: [0.5"
    res = parse_earthgpt_boxes(text)
    assert [(b.label, b.coords) for b in res.boxes] == [
        ("plane", (0.1, 0.2, 0.3, 0.4)), ("storage tank", (0.1, 0.1, 0.5, 0.1, 0.5, 0.6, 0.1, 0.6))]
    assert res.n_malformed == 2
    assert parse_earthgpt_boxes("[0.1, 0.2, 0.3, 0.4]").boxes[0].label is None
    assert parse_earthgpt_boxes(None).boxes == [] and parse_earthgpt_boxes("{<1><2><3><4>|0}").boxes == []


# ---------------------------------------------------------------- mAP

def _rect(x1, y1, x2, y2):
    return [(x1, y1), (x2, y1), (x2, y2), (x1, y2)]


def test_map_hand_made():
    a, b = _rect(0, 0, 0.2, 0.2), _rect(0.5, 0.5, 0.9, 0.9)
    refs = [[("plane", a), ("ship", b)]]
    assert detection_map([[("plane", a), ("ship", b)]], refs)["map"] == pytest.approx(100.0)
    # a false positive ranked first: plane precision 1/2 at recall 1 -> AP 50; ship 100 -> mAP 75
    fp = _rect(0.3, 0.0, 0.4, 0.1)
    assert detection_map([[("plane", fp), ("plane", a), ("ship", b)]], refs)["map"] == pytest.approx(75.0)
    # a false positive ranked last changes nothing
    assert detection_map([[("plane", a), ("ship", b), ("plane", fp)]], refs)["map"] == pytest.approx(100.0)
    # a missed ship: ship AP 0 -> 50
    assert detection_map([[("plane", a)]], refs)["map"] == pytest.approx(50.0)
    # a duplicate of a matched box is a false positive
    refs2 = [[("plane", a), ("plane", b)]]
    assert detection_map([[("plane", a), ("plane", a), ("plane", b)]], refs2)["map"] == pytest.approx(
        100 * (0.5 * 1 + 0.5 * (2 / 3)))
    # wrong class = miss
    assert detection_map([[("ship", a), ("plane", b)]], refs)["map"] == pytest.approx(0.0)


def test_map_rotated():
    c, s = math.cos(math.radians(30)), math.sin(math.radians(30))
    def rot(cx, cy, w, h):
        return [(cx + dx * c - dy * s, cy + dx * s + dy * c) for dx, dy in ((-w, -h), (w, -h), (w, h), (-w, h))]
    ref = rot(0.5, 0.5, 0.2, 0.05)
    assert polygon_iou(ref, ref) == pytest.approx(1.0)
    assert detection_map([[("ship", rot(0.5, 0.5, 0.2, 0.05))]], [[("ship", ref)]])["map"] == pytest.approx(100.0)
    # the horizontal box around the rotated one overlaps < 0.5 -> miss
    xs, ys = [p[0] for p in ref], [p[1] for p in ref]
    hbb = _rect(min(xs), min(ys), max(xs), max(ys))
    assert polygon_iou(hbb, ref) < 0.5
    assert detection_map([[("ship", hbb)]], [[("ship", ref)]])["map"] == 0.0


def _brute_ap(flags, n_gt):
    """All-point AP by definition: at each recall step, the best precision at that recall or beyond."""
    points = [(sum(flags[:k]) / n_gt, sum(flags[:k]) / k) for k in range(1, len(flags) + 1)]
    ap, prev = 0.0, 0.0
    for r in sorted({r for r, _ in points}):
        if r > prev:
            ap += (r - prev) * max(p for rr, p in points if rr >= r)
            prev = r
    return ap


def _brute_map(preds, refs, thr=0.5):
    classes = sorted({lbl for img in refs for lbl, _ in img})
    aps = []
    for cls in classes:
        order = sorted(((k, i, box) for i, img in enumerate(preds) for k, (lbl, box) in enumerate(img) if lbl == cls))
        used = set()
        flags = []
        for _, i, box in order:
            cands = [(polygon_iou(box, g), j) for j, (lbl, g) in enumerate(refs[i]) if lbl == cls]
            best = max(cands, default=(0, None), key=lambda t: t[0])
            ok = best[1] is not None and best[0] >= thr and (i, best[1]) not in used
            used.add((i, best[1])) if ok else None
            flags.append(ok)
        n_gt = sum(1 for img in refs for lbl, _ in img if lbl == cls)
        aps.append(100 * _brute_ap(flags, n_gt))
    return sum(aps) / len(aps)


def test_map_against_brute_force():
    rng = random.Random(7)
    for _ in range(30):
        refs, preds = [], []
        for _img in range(3):
            gts = []
            for _k in range(rng.randint(1, 4)):
                x, y = rng.uniform(0, 0.7), rng.uniform(0, 0.7)
                gts.append((rng.choice("ab"), _rect(x, y, x + rng.uniform(0.05, 0.3), y + rng.uniform(0.05, 0.3))))
            dets = []
            for lbl, g in gts:
                if rng.random() < 0.7:
                    dx = rng.uniform(-0.05, 0.05)
                    dets.append((lbl if rng.random() < 0.9 else "b", [(px + dx, py) for px, py in g]))
            for _k in range(rng.randint(0, 2)):
                x, y = rng.uniform(0, 0.8), rng.uniform(0, 0.8)
                dets.append((rng.choice("ab"), _rect(x, y, x + 0.1, y + 0.1)))
            rng.shuffle(dets)
            refs.append(gts)
            preds.append(dets)
        assert detection_map(preds, refs)["map"] == pytest.approx(_brute_map(preds, refs))


def test_evaluate_detect_and_grounding_both_formats(tmp_path):
    recs = _build(tmp_path)
    ref = recs["detect"]["conversations"][1]["value"]
    rows = [{"id": "d", "image": "x.png", "question": "q", "reference": ref}]
    metrics, _ = score("detect", rows, {"d": ref})
    assert metrics["mAP@0.5"] == pytest.approx(100.0) and metrics["score"] == pytest.approx(100.0)
    first_only = ref.split("\n")[0]
    metrics, _ = score("detect", rows, {"d": first_only})
    assert metrics["score"] == pytest.approx(25.0)  # plane AP 50 (1 of 2 found), ship AP 0
    refer = recs["refer"]["conversations"][1]["value"]
    rows = [{"id": "r", "image": "x.png", "question": "q", "reference": refer}]
    metrics, out = score("refer", rows, {"r": refer})
    assert metrics["acc@0.5"] == 100.0 and metrics["format"] == "earthgpt" and out[0]["correct"]
    metrics, _ = score("refer", rows, {"r": "[0.9, 0.9, 1.0, 1.0]"})
    assert metrics["acc@0.5"] == 0.0
    geo = [{"id": "g", "image": "x.png", "question": "q", "reference": "{<10><10><30><20>|0}"}]
    metrics, _ = score("refer", geo, {"g": "{<10><10><30><20>|0}"})
    assert metrics["acc@0.5"] == 100.0 and "format" not in metrics
