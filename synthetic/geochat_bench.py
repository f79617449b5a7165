"""Small GeoChat-Bench files, in the exact formats GeoChat releases, from the demo data (or any DOTA + scene folders).

:func:`write_demo_bench` writes ``aid.jsonl``, ``UCmerced.jsonl`` (from ``scenes/<class>/``), ``lrben.jsonl``,
``hrben.jsonl``, ``referring.jsonl``, ``grounding_description.jsonl`` and ``region_captioning.jsonl`` (from
``dota/images`` + ``dota/labelTxt``) with image paths relative to the data folder (the bench's ``--images``).
The answers are derived from the boxes (counts, presence, comparison; "urban" when the scene holds at least
:data:`URBAN_OBJECTS` objects, else "rural"; size groups by box area: these are the demo's rules, not RSVQA's or
GeoChat's). :func:`write_answers` writes answers files (GeoChat's answers-file format) from any answer function, e.g.
:func:`oracle_answer` (the ground truth itself: every metric 100, ROUGE-1 100); :func:`run_demo_bench` scores a
model (or saved answers) on them with :func:`vlm_finetune.bench.run_bench`.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

from PIL import Image

from rs_common.files import atomic_write_text
from rs_common.formats.dota import read_label_file
from vlm_finetune.bench import SCENE_SUFFIX, VQA_SUFFIX, BenchConfig, image_size, run_bench
from vlm_finetune.bench_metrics import BENCH_FILES, BOXES, CAPTION, SCENE, VQA, reference_boxes, scene_class
from vlm_finetune.boxes import box_from_obb, format_box, format_boxes

URBAN_OBJECTS = 6
POSITIONS = (("top left", "top", "top right"), ("left", "middle", "right"), ("bottom left", "bottom", "bottom right"))
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".tif", ".tiff")


def _jsonl(path: Path, rows: list[dict]) -> Path:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def _plural(word: str, n: int) -> str:
    return word if n == 1 else (word + "es" if word.endswith(("s", "x", "ch", "sh")) else word + "s")


def scene_records(scenes: Path, data_dir: Path, n: int, offset: int = 0) -> list[dict]:
    """Scene-classification records: ``question_id = "<ClassFolder>/<file>"`` (GeoChat's rule reads the class
    from it), every ``offset``-th image of each class folder first, ``n`` in all, classes interleaved."""
    folders = sorted(p for p in scenes.iterdir() if p.is_dir() and not p.name.startswith("."))
    classes = [f.name for f in folders]
    listed = ", ".join(c.lower() for c in classes)
    per_class = [sorted(p for p in f.iterdir() if p.suffix.lower() in IMAGE_EXTS)[offset::2] for f in folders]
    rows = []
    for i in range(max((len(p) for p in per_class), default=0)):
        for folder, files in zip(folders, per_class):
            if i < len(files) and len(rows) < n:
                rows.append({"question_id": f"{folder.name}/{files[i].name}",
                             "image": files[i].relative_to(data_dir).as_posix(),
                             "text": f"Classes: {listed}.\n{SCENE_SUFFIX}", "ground_truth": folder.name})
    return rows


def dota_scenes(dota: Path) -> list[tuple[Path, tuple[int, int], list]]:
    """``(image, (width, height), objects)`` of every DOTA image with a readable label file and objects on it."""
    out = []
    for image in sorted((dota / "images").iterdir()):
        label = dota / "labelTxt" / (image.stem + ".txt")
        if image.suffix.lower() not in IMAGE_EXTS or not label.is_file():
            continue
        objects, _ = read_label_file(label)
        with Image.open(image) as im:
            size = im.size
        # some shipped crops keep labels of the uncropped image: objects whose centre is off the image are dropped
        objects = [o for o in objects if 0 <= sum(o.coords[0::2]) / 4 < size[0] and 0 <= sum(o.coords[1::2]) / 4 < size[1]]
        if objects:
            out.append((image, size, objects))
    return out


def _position(obj, size) -> str:
    xs, ys = obj.coords[0::2], obj.coords[1::2]
    col = min(2, max(0, int(sum(xs) / 4 / size[0] * 3)))
    row = min(2, max(0, int(sum(ys) / 4 / size[1] * 3)))
    return POSITIONS[row][col]


def _polygon(obj) -> list[list[float]]:
    return [[obj.coords[2 * i], obj.coords[2 * i + 1]] for i in range(4)]


def _size_group(obj, size) -> str:
    box = box_from_obb(obj.coords, *size)
    area = box.width * box.height / 1e4  # fraction of the image (the grid is 100 x 100)
    return "small" if area < 0.005 else "medium" if area < 0.03 else "large"


def vqa_records(scenes, data_dir: Path, n: int, seed: int) -> list[dict]:
    """RSVQA-style records (RSVQA's ``category`` spellings: presence, comp, rural_urban, count)."""
    rng = random.Random(seed)
    classes = sorted({o.cls for _, _, objs in scenes for o in objs})
    rows = []
    for k in range(n):
        image, _, objs = scenes[k % len(scenes)]
        counts = {c: sum(o.cls == c for o in objs) for c in classes}
        a, b = rng.sample(classes, 2) if len(classes) > 1 else (classes[0], classes[0])
        kind = ("presence", "comp", "rural_urban", "count")[k % 4]
        text, truth = {
            "presence": (f"Is there a {a} in the image?", "yes" if counts[a] else "no"),
            "comp": (f"Are there more {_plural(a, 2)} than {_plural(b, 2)}?", "yes" if counts[a] > counts[b] else "no"),
            "rural_urban": ("Is it a rural or an urban area?", "urban" if len(objs) >= URBAN_OBJECTS else "rural"),
            "count": (f"How many {_plural(a, 2)} are there?", str(counts[a])),
        }[kind]
        rows.append({"question_id": k, "image": image.relative_to(data_dir).as_posix(),
                     "text": f"{text}\n{VQA_SUFFIX}", "category": kind, "ground_truth": truth})
    return rows


def box_records(scenes, data_dir: Path, n: int, grounding_description: bool = False) -> list[dict]:
    """Referring records (single ``ref``, multi-object ``ref``, ``grounding``), or grounding descriptions."""
    rows = []
    for k in range(n):
        image, size, objs = scenes[k % len(scenes)]
        image_id = image.relative_to(data_dir).with_suffix("").as_posix()  # the bench adds ".png"
        mode = "description" if grounding_description else ("single", "multi", "grounding")[k % 3]
        obj = objs[(k // 3) % len(objs)]
        same = [o for o in objs if o.cls == obj.cls][:4]
        if mode == "single":
            picked, question, kind = [obj], f"the {obj.cls} at the {_position(obj, size)}", "ref"
        elif mode == "multi":
            picked, question, kind = same, f"all {_plural(obj.cls, 2)}", "ref"
        elif mode == "grounding":
            picked, question, kind = same, f" Where are the {_plural(obj.cls, 2)}?", "grounding"
        else:
            picked, question, kind = objs[:10], " Describe the image in detail.", "grounding_description"
        rows.append({"question_id": k, "image_id": image_id, "question": question,
                     "ground_truth": [_polygon(o) for o in picked], "type": kind, "dataset": "demo",
                     "obj_ids": [objs.index(o) for o in picked], "size_group": _size_group(picked[0], size)})
    return rows


def caption_records(scenes, data_dir: Path, n: int) -> list[dict]:
    rows = []
    for k in range(n):
        image, size, objs = scenes[k % len(scenes)]
        obj = objs[(k // len(scenes)) % len(objs)]
        rows.append({"question_id": k, "image_id": image.relative_to(data_dir).with_suffix("").as_posix(),
                     "question": format_box(box_from_obb(obj.coords, *size)),
                     "ground_truth": f"a {obj.cls} at the {_position(obj, size)} of the image"})
    return rows


def write_demo_bench(data_dir, out_dir, n_per_file: int = 8, seed: int = 0) -> dict:
    """The seven GeoChat-Bench files from ``data_dir`` (``scenes/<class>/`` and ``dota/{images,labelTxt}``) into
    ``out_dir``; returns ``{stem: path}`` plus ``"bench"`` (the folder) and ``"images"`` (``data_dir``: the
    image root). A part whose source folder is absent is left out."""
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    if n_per_file < 1:
        raise ValueError(f"n_per_file must be >= 1, got {n_per_file}")
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict = {"bench": str(out_dir), "images": str(data_dir)}
    if (data_dir / "scenes").is_dir():
        paths["aid"] = _jsonl(out_dir / "aid.jsonl", scene_records(data_dir / "scenes", data_dir, n_per_file, 0))
        paths["UCmerced"] = _jsonl(out_dir / "UCmerced.jsonl", scene_records(data_dir / "scenes", data_dir, n_per_file, 1))
    scenes = dota_scenes(data_dir / "dota") if (data_dir / "dota" / "images").is_dir() else []
    if scenes:
        paths["lrben"] = _jsonl(out_dir / "lrben.jsonl", vqa_records(scenes, data_dir, n_per_file, seed))
        paths["hrben"] = _jsonl(out_dir / "hrben.jsonl", vqa_records(scenes, data_dir, n_per_file, seed + 1))
        paths["referring"] = _jsonl(out_dir / "referring.jsonl", box_records(scenes, data_dir, n_per_file))
        paths["grounding_description"] = _jsonl(out_dir / "grounding_description.jsonl",
                                                box_records(scenes, data_dir, n_per_file, grounding_description=True))
        paths["region_captioning"] = _jsonl(out_dir / "region_captioning.jsonl", caption_records(scenes, data_dir, n_per_file))
    return {k: str(v) for k, v in paths.items()}


def oracle_answer(stem: str, record: dict, images=None) -> str | None:
    """The answer a perfect model gives (the ground truth in GeoChat's answer style)."""
    kind = BENCH_FILES[stem]
    if kind == SCENE:
        return scene_class(record)
    if kind in (VQA, CAPTION):
        return str(record["ground_truth"])
    boxes, _ = reference_boxes(record["ground_truth"], image_size(images, stem, record))
    return format_boxes(boxes) if kind == BOXES else None


def write_answers(bench_dir, out_dir, answer_for: Callable[[str, dict], str | None]) -> dict:
    """Answers files (GeoChat's answers-file format, named like the bench files) with ``answer_for(stem, record)``;
    a ``None`` answer leaves the line out. Returns ``{stem: path}``."""
    bench_dir, out_dir = Path(bench_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for stem in BENCH_FILES:
        src = bench_dir / f"{stem}.jsonl"
        if not src.is_file():
            continue
        rows = []
        for line in src.read_text().splitlines():
            rec = json.loads(line)
            answer = answer_for(stem, rec)
            if answer is not None:
                rows.append({"question_id": rec["question_id"], "image_id": rec.get("image_id", rec.get("image")),
                             "answer": answer, "ground_truth": rec.get("ground_truth"),
                             **{k: rec[k] for k in ("question", "text", "type", "category", "dataset", "obj_ids",
                                                    "size_group") if k in rec}})
        paths[stem] = str(_jsonl(out_dir / src.name, rows))
    return paths


def run_demo_bench(data_dir, out_dir, model: str | None = None, answers: str | None = None, n_per_file: int = 8,
                   max_new_tokens: int = 48) -> dict:
    """Write the demo bench into ``out_dir/bench`` and score ``model`` (or the ``answers`` folder; neither: the
    oracle's answers) on it into ``out_dir/eval``; returns :func:`vlm_finetune.bench.run_bench`'s result."""
    out_dir = Path(out_dir)
    paths = write_demo_bench(data_dir, out_dir / "bench", n_per_file)
    if model is None and answers is None:
        answers = str(out_dir / "oracle_answers")
        write_answers(out_dir / "bench", answers, lambda stem, rec: oracle_answer(stem, rec, data_dir))
    cfg = BenchConfig(bench=paths["bench"], model=model, answers=answers, images=str(data_dir),
                      output=str(out_dir / "eval"), max_new_tokens=max_new_tokens)
    return run_bench(cfg)
