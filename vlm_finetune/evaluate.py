"""Evaluate GeoChat (HF Llava layout, optionally + a LoRA adapter) on LLaVA-format data, or score saved answers.

Tasks and their main figure (``score`` in metrics.json):

* ``classify`` / ``vqa``: accuracy in percent, normalised exact match (:func:`vlm_finetune.metrics.normalize_answer`);
* ``refer`` / ``grounding``: acc@0.5 in percent with rotated IoU; ``refer`` compares the FIRST predicted box with its
  best reference box, ``grounding`` the best predicted/reference pair (``--box-match`` overrides);
* ``region-caption``: ROUGE-1 F in percent (ROUGE-L, and METEOR when nltk + WordNet are installed, beside it).

The reference of a record is its first gpt turn; the question its first human turn (``<image>`` stripped).
Missing predictions count as wrong (``n_missing``); unreadable box groups are counted (``n_malformed_boxes``).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rs_common.config import ConfigError
from rs_common.files import check_output_folder
from rs_common.formats.conversation import generation_prompt
from rs_common.formats.llava_record import json_lines, load_json_records, read_text_file, strip_image_token

from .boxes import parse_boxes
from .earthgpt import looks_earthgpt, parse_earthgpt_boxes
from .metrics import (
    acc_at_iou,
    accuracy,
    detection_map,
    meteor,
    normalize_answer,
    polygon_sample_iou,
    rouge_scores,
    sample_iou,
)

log = logging.getLogger(__name__)

TASKS = ("classify", "vqa", "refer", "grounding", "region-caption", "detect")
BOX_TASKS = ("refer", "grounding")


class EvalError(ValueError):
    """Bad input data / model for an evaluation (reported as a one-line error by the CLI)."""


@dataclass
class EvalGeoChatConfig:
    model: str | None = field(default=None, metadata={"help": "HF Llava GeoChat directory (not needed with "
                                                               "--predictions)", "metavar": "DIR"})
    task: str | None = field(default=None, metadata={"help": "one of " + ", ".join(TASKS) + " (detect: mAP of "
                                                             "EarthGPT-format answers; refer/grounding read both "
                                                             "formats)"})
    data: str | None = field(default=None, metadata={"help": "LLaVA-format json (list of {id, image, "
                                                              "conversations}) or jsonl"})
    images: str | None = field(default=None, metadata={"help": "folder the records' image paths are relative to"})
    output: str | None = field(default=None, metadata={"help": "output folder (metrics.json, predictions.jsonl, "
                                                                "report.html); default runs/eval_geochat/<task>"})
    predictions: str | None = field(default=None, metadata={
        "help": "score this predictions.jsonl ({question_id, answer} lines) instead of running the model"})
    adapter: str | None = field(default=None, metadata={"help": "peft (LoRA) adapter directory to apply"})
    max_new_tokens: int = field(default=128, metadata={"help": "generation length"})
    device: str = field(default="cpu", metadata={"help": "cpu or cuda"})
    box_match: str | None = field(default=None, metadata={
        "help": "first (first predicted box) or best (best pair); default first for refer, best for grounding"})
    iou_threshold: float = field(default=0.5, metadata={"help": "IoU for a box hit"})
    report_examples: int = field(default=20, metadata={"help": "examples shown in report.html"})
    limit: int | None = field(default=None, metadata={"help": "evaluate only the first N records"})

    def validate(self) -> None:
        if self.task not in TASKS:
            raise ConfigError(f"task {self.task!r}: use one of {', '.join(TASKS)} (--task)")
        if not self.data:
            raise ConfigError("data is required (--data JSON)")
        if not self.predictions and not self.model:
            raise ConfigError("give --model DIR (to run inference) or --predictions FILE.jsonl")
        if self.device not in ("cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ConfigError(f"device {self.device!r}: use cpu or cuda")
        if self.box_match not in (None, "first", "best"):
            raise ConfigError(f"box_match {self.box_match!r}: use first or best")
        if self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if not 0 < self.iou_threshold <= 1:
            raise ConfigError(f"iou_threshold must be in (0, 1], got {self.iou_threshold}")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"limit must be >= 1 (or left out for every record), got {self.limit}")
        if self.report_examples < 0:
            raise ConfigError(f"report_examples must be >= 0, got {self.report_examples}")


# ---------------------------------------------------------------- data

def _turn_value(turn, path: Path, index: int) -> str | None:
    if not isinstance(turn, dict):
        raise EvalError(f"{path}: record {index}: each turn must be an object {{'from': ..., 'value': ...}}, "
                        f"got {type(turn).__name__}")
    value = turn.get("value", "")
    if not isinstance(value, str):
        raise EvalError(f"{path}: record {index}: a turn's 'value' must be a string, got {type(value).__name__}")
    return value


def load_records(path) -> list[dict]:
    """``{id, image, question, reference}`` per record of a LLaVA-format json/jsonl; a malformed file or record is an
    EvalError naming the file and the record."""
    path = Path(path)
    data = load_json_records(path, EvalError)
    if isinstance(data, dict):
        data = data.get("data", data.get("annotations", [data]))
    if not isinstance(data, list):
        raise EvalError(f"{path}: expected a list of records")
    if not data:
        raise EvalError(f"{path}: holds no records")
    out = []
    for i, rec in enumerate(data):
        if not isinstance(rec, dict) or not isinstance(rec.get("conversations"), list):
            raise EvalError(f"{path}: record {i} has no conversations list")
        turns = [(t.get("from") if isinstance(t, dict) else None, _turn_value(t, path, i)) for t in rec["conversations"]]
        question = next((v for who, v in turns if who == "human"), None)
        answer = next((v for who, v in turns if who == "gpt"), None)
        if question is None or answer is None:
            raise EvalError(f"{path}: record {i} lacks a human or a gpt turn")
        image = rec.get("image")
        if image is not None and not isinstance(image, str):
            raise EvalError(f"{path}: record {i}: 'image' must be a path string, got {type(image).__name__}")
        question = strip_image_token(question)
        out.append({"id": str(rec.get("id", i)), "image": image, "question": question,
                    "reference": answer.strip()})
    return out


def load_predictions(path) -> dict[str, str]:
    """``{question_id: answer}`` of a predictions.jsonl; a bad file or line is an EvalError naming it."""
    path = Path(path)
    text = read_text_file(path, EvalError, "predictions file", "a .jsonl file")
    preds: dict[str, str] = {}
    for n, row in json_lines(text, path, EvalError):
        if not isinstance(row, dict):
            raise EvalError(f"{path}:{n}: each line must be a json object {{question_id, answer}}")
        qid = row.get("question_id", row.get("id"))
        ans = row.get("answer", row.get("text"))
        if qid is None or ans is None:
            raise EvalError(f"{path}:{n}: needs question_id and answer")
        preds[str(qid)] = str(ans)
    return preds


def check_images(records: list[dict], images_dir) -> None:
    """Before a model is loaded for inference: ``images_dir`` is a folder and every record's image exists and opens
    as an image (header only, no decoding); otherwise an EvalError naming the first bad record and file."""
    from PIL import Image

    if images_dir is not None and not Path(images_dir).is_dir():
        raise EvalError(f"--images {images_dir}: not a folder (the folder the records' image paths are relative to)")
    root = Path(images_dir or ".")
    seen: set[Path] = set()
    for rec in records:
        if not rec.get("image"):
            raise EvalError(f"record {rec['id']!r} has no 'image' to run the model on")
        path = root / rec["image"]
        if path in seen:
            continue
        seen.add(path)
        if not path.is_file():
            raise EvalError(f"record {rec['id']!r}: image not found: {path}")
        try:
            with Image.open(path):
                pass
        except Exception as exc:  # noqa: BLE001 - UnidentifiedImageError, OSError, DecompressionBombError
            raise EvalError(f"record {rec['id']!r}: {path} is not a readable image ({type(exc).__name__})") from None


def check_output_dir(path) -> Path:
    return check_output_folder(path, EvalError)


def check_device(device: str) -> None:
    """A device name torch does not know, or CUDA asked for on a machine without it: an EvalError before the model
    is loaded."""
    from rs_common.torch_env import resolve_device  # torch only once a model is about to be loaded

    resolve_device(device, EvalError)


def check_adapter_dir(adapter) -> Path:
    """A peft adapter folder (``adapter_config.json`` + ``adapter_model.safetensors``/``.bin``), checked cheaply
    before the base model is loaded."""
    from rs_common.weights import check_weight_file, read_json_object

    p = Path(adapter)
    if not p.is_dir():
        raise EvalError(f"--adapter {p}: not a folder (expected a peft adapter folder with adapter_config.json)")
    if not (p / "adapter_config.json").is_file():
        raise EvalError(f"--adapter {p}: no adapter_config.json (is it finetune_geochat.py's OUTPUT/adapter?)")
    read_json_object(p / "adapter_config.json", EvalError, "adapter config")
    weights = [p / n for n in ("adapter_model.safetensors", "adapter_model.bin") if (p / n).is_file()]
    if not weights:
        raise EvalError(f"--adapter {p}: no adapter_model.safetensors or adapter_model.bin")
    check_weight_file(weights[0], EvalError)
    return p


# ---------------------------------------------------------------- inference

def load_for_inference(model_dir, adapter=None, device: str = "cpu"):
    """``(model, processor)`` of an HF Llava GeoChat dir, with a peft LoRA adapter applied when given."""
    from rs_common.errors import first_line

    from .geochat import GeoChatError, check_geochat_dir, has_llava_processor_files, load_geochat

    check_device(device)
    if adapter:
        check_adapter_dir(adapter)
    try:
        check_geochat_dir(model_dir)
        if not has_llava_processor_files(model_dir):
            raise EvalError(f"{model_dir} has no LlavaProcessor (processor_config.json, or preprocessor_config.json + "
                            "tokenizer files) to run inference with")
        chat = load_geochat(model_dir)
    except GeoChatError as exc:
        raise EvalError(str(exc)) from None
    model, processor = chat.model, chat.require_processor(model_dir, EvalError, " to run inference with")
    from .image_prep import ImagePrepError, model_image_aspect_ratio

    try:
        model_image_aspect_ratio(model)  # an image mode this toolkit cannot reproduce fails before any answer
    except ImagePrepError as exc:
        raise EvalError(f"{model_dir}: config.json {exc}") from None
    if adapter:
        from peft import PeftModel

        from .dual_perspective import model_for_adapter

        try:
            model = PeftModel.from_pretrained(model_for_adapter(model, adapter), adapter)
        except Exception as exc:  # noqa: BLE001 - peft raises many types for an adapter of another model
            raise EvalError(f"--adapter {adapter}: cannot apply it to {model_dir} ({first_line(exc)})") from None
    return model.to(device).eval(), processor


def prompt_inputs(processor, image, prompt: str, image_aspect_ratio: str | None = None, high_res_grid: int = 0):
    """Model inputs (ids, mask, pixel_values) of a rendered vicuna_v1 ``prompt`` holding one ``<image>`` and of
    ``image`` (PIL), preprocessed as training did (:func:`vlm_finetune.image_prep.prepare_image`: ``"pad"`` by
    default, never a bare centre crop; a dual-perspective model's 2N^2 + 1 sub-images with ``high_res_grid``)."""
    from .image_prep import prepare_image, with_high_res

    inputs = processor(images=prepare_image(image, processor, image_aspect_ratio), text=prompt, return_tensors="pt")
    return with_high_res(inputs, image, processor, image_aspect_ratio, high_res_grid)


def generate_answer(model, processor, image, prompt: str, max_new_tokens: int = 64,
                    image_aspect_ratio: str | None = None) -> str:
    """Greedy continuation of a rendered vicuna_v1 ``prompt`` (ending in ``ASSISTANT:``) about ``image``; the image
    is preprocessed in the model's recorded mode (``config.image_aspect_ratio``, GeoChat's ``pad`` when absent)
    unless ``image_aspect_ratio`` is given."""
    import torch

    from .image_prep import model_high_res_grid, model_image_aspect_ratio

    tok = processor.tokenizer
    mode = image_aspect_ratio or model_image_aspect_ratio(model)
    inputs = prompt_inputs(processor, image, prompt, mode, model_high_res_grid(model)).to(model.device)
    if "pixel_values" in inputs:
        inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
    return tok.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()


def answer_question(model, processor, image, question: str, max_new_tokens: int = 64,
                    image_aspect_ratio: str | None = None) -> str:
    """Greedy answer of the model to ``question`` about ``image`` (PIL), in the vicuna_v1 template, the image
    preprocessed as in training (:func:`generate_answer`)."""
    return generate_answer(model, processor, image, generation_prompt(question), max_new_tokens, image_aspect_ratio)


def run_inference(cfg: EvalGeoChatConfig, records: list[dict], out_dir: Path,
                  image_errors: list[str] | None = None) -> dict[str, str]:
    """Answer every record; an image that fails to decode now (it opened when checked) is logged, appended to
    ``image_errors`` and left without a prediction (it counts as missing), so one bad file never ends a long run."""
    from PIL import Image

    model, processor = load_for_inference(cfg.model, cfg.adapter, cfg.device)
    preds: dict[str, str] = {}
    path = out_dir / "predictions.jsonl"
    t0 = time.time()
    with path.open("w") as fh:
        for i, rec in enumerate(records):
            image_path = Path(cfg.images or ".") / rec["image"]
            try:
                with Image.open(image_path) as im:
                    image = im.convert("RGB")
            except Exception as exc:  # noqa: BLE001 - truncated data, decompression bombs...
                log.warning("record %s: %s does not decode (%s): no prediction", rec["id"], image_path, exc)
                if image_errors is not None:
                    image_errors.append(rec["id"])
                continue
            answer = answer_question(model, processor, image, rec["question"], cfg.max_new_tokens)
            preds[rec["id"]] = answer
            fh.write(json.dumps({"question_id": rec["id"], "answer": answer}) + "\n")
            fh.flush()
            if (i + 1) % 50 == 0:
                log.info("%d/%d answered (%.1f s)", i + 1, len(records), time.time() - t0)
    return preds


# ---------------------------------------------------------------- scoring

def score(task: str, records: list[dict], preds: dict[str, str], box_match: str | None = None,
          iou_threshold: float = 0.5) -> tuple[dict[str, Any], list[dict]]:
    """``(metrics, per-sample rows)`` for saved answers ``preds`` (id -> text)."""
    answers = [preds.get(r["id"]) for r in records]
    refs = [r["reference"] for r in records]
    metrics: dict[str, Any] = {"task": task, "n": len(records), "n_missing": sum(a is None for a in answers)}
    rows = [{"id": r["id"], "image": r["image"], "question": r["question"], "reference": r["reference"],
             "answer": a} for r, a in zip(records, answers)]
    notes = []
    if task == "detect" or (task in BOX_TASKS and any(looks_earthgpt(r) for r in refs)):
        metrics.update(score_earthgpt(task, rows, answers, refs, box_match, iou_threshold))
    elif task in ("classify", "vqa"):
        metrics["accuracy"] = metrics["score"] = accuracy(answers, refs)
        metrics["score_name"] = "accuracy_percent"
        for row in rows:
            row["correct"] = row["answer"] is not None and \
                normalize_answer(row["answer"]) == normalize_answer(row["reference"])
    elif task in BOX_TASKS:
        match = box_match or ("first" if task == "refer" else "best")
        pred_boxes, ref_boxes, n_bad, n_bad_ref, n_empty, ious = [], [], 0, 0, 0, []
        for row, a, r in zip(rows, answers, refs):
            pr = parse_boxes(a) if a is not None else None
            rr = parse_boxes(r)
            n_bad += pr.n_malformed if pr is not None else 0
            n_bad_ref += rr.n_malformed
            if pr is not None and not pr.boxes:
                n_empty += 1
            pred_boxes.append(pr.boxes if pr is not None else [])
            ref_boxes.append(rr.boxes)
            iou = sample_iou(pred_boxes[-1], rr.boxes, match)
            ious.append(iou)
            row.update(pred_boxes=pred_boxes[-1], ref_boxes=rr.boxes, iou=iou, correct=iou >= iou_threshold)
        key = f"acc@{iou_threshold:g}"
        metrics[key] = metrics["score"] = acc_at_iou(pred_boxes, ref_boxes, iou_threshold, match)
        metrics["score_name"] = f"{key}_percent"
        metrics["mean_iou"] = sum(ious) / len(ious) if ious else 0.0
        metrics["box_match"] = match
        metrics["n_malformed_boxes"] = n_bad
        metrics["n_no_box_predictions"] = n_empty
        metrics["n_malformed_reference_boxes"] = n_bad_ref
        metrics["n_references_without_box"] = sum(1 for b in ref_boxes if not b)
        notes.append("angle convention: theta = angle of the box's longer side to the image x-axis, degrees "
                     "from +x towards +y (vlm_finetune/boxes.py)")
    elif task == "region-caption":
        rs = rouge_scores(answers, refs)
        metrics.update(rs)
        metrics["score"] = rs["rouge1"]
        metrics["score_name"] = "rouge1_f_percent"
        value, note = meteor(answers, refs)
        if value is not None:
            metrics["meteor"] = value
        else:
            notes.append(note)
    else:
        raise EvalError(f"unknown task {task!r}")
    metrics.setdefault("n_malformed_boxes", 0)
    if notes:
        metrics["notes"] = notes
    return metrics, rows


def score_earthgpt(task: str, rows: list[dict], answers: list, refs: list[str], box_match: str | None = None,
                   iou_threshold: float = 0.5) -> dict[str, Any]:
    """Metrics of EarthGPT-format box answers (:mod:`vlm_finetune.earthgpt`): ``detect`` -> mAP@``iou_threshold``
    (:func:`detection_map`, answers ranked by order of appearance); ``refer`` / ``grounding`` -> acc@threshold with
    polygon IoU. Rows get ``pred_polygons`` / ``ref_polygons`` (normalised) and, for grounding, ``iou``/``correct``."""
    parsed = [parse_earthgpt_boxes(a) if a is not None else None for a in answers]
    ref_parsed = [parse_earthgpt_boxes(r) for r in refs]
    out: dict[str, Any] = {
        "format": "earthgpt",
        "n_malformed_boxes": sum(p.n_malformed for p in parsed if p is not None),
        "n_malformed_reference_boxes": sum(r.n_malformed for r in ref_parsed),
        "n_no_box_predictions": sum(1 for p in parsed if p is not None and not p.boxes),
    }
    preds = [[(b.label, b.polygon) for b in p.boxes] if p is not None else [] for p in parsed]
    golds = [[(b.label, b.polygon) for b in r.boxes] for r in ref_parsed]
    for row, p, g in zip(rows, preds, golds):
        row.update(pred_polygons=[b for _, b in p], ref_polygons=[b for _, b in g])
    key = f"{'mAP' if task == 'detect' else 'acc'}@{iou_threshold:g}"
    if task == "detect":
        res = detection_map(preds, golds, iou_threshold)
        out.update(per_class_ap=res["per_class"], n_classes=res["n_classes"])
        out[key] = out["score"] = res["map"]
        out["ranking"] = "no scores in a model's answer: detections ranked by their order of appearance"
    else:
        match = box_match or ("first" if task == "refer" else "best")
        ious = [polygon_sample_iou(row["pred_polygons"], row["ref_polygons"], match) for row in rows]
        for row, v in zip(rows, ious):
            row.update(iou=v, correct=v >= iou_threshold)
        out[key] = out["score"] = 100.0 * sum(v >= iou_threshold for v in ious) / len(ious) if ious else 0.0
        out.update(mean_iou=sum(ious) / len(ious) if ious else 0.0, box_match=match)
    out["score_name"] = f"{key}_percent"
    return out


# ---------------------------------------------------------------- report

def _result_cell(row: dict) -> str:
    from rs_common.report_kit import esc

    from .metrics import rouge1_f

    if "correct" in row:
        result = "<span class='ok'>hit</span>" if row["correct"] else "<span class='bad'>miss</span>"
        return result + (f"<br>IoU {row['iou']:.2f}" if "iou" in row else "")
    if row["answer"] is None:
        return "<span class='bad'>missing</span>"
    return esc(f"R-1 {100 * rouge1_f(row['answer'], row['reference']):.1f}")


def write_report(path: Path, metrics: dict, rows: list[dict], images_dir, n_examples: int = 20) -> None:
    """report.html: the metrics, then the first ``n_examples`` rows with their image (predicted boxes red,
    reference boxes green), question, reference, answer and result; built with :mod:`rs_common.report_kit`."""
    from rs_common import report_kit as kit

    from .report import draw_grid_boxes, thumbnail

    parts = [f"<pre>{kit.esc(json.dumps(metrics, indent=2))}</pre>"]
    if metrics["task"] in BOX_TASKS:
        parts.append("<p>Boxes: <span style='color:#e00'>predicted (red)</span>, "
                     "<span style='color:#0a0'>reference (green)</span>.</p>")
    cells = []
    for row in rows[:n_examples]:
        img = thumbnail(Path(images_dir) / row["image"] if images_dir and row.get("image") else None, 256)
        draw_grid_boxes(img, row.get("ref_boxes"), (0, 200, 0))
        draw_grid_boxes(img, row.get("pred_boxes"), (230, 0, 0))
        answer = "<i>missing</i>" if row["answer"] is None else kit.esc(row["answer"])
        cells.append([kit.img_tag(img, quality=80), kit.esc(row["id"]), kit.esc(row["question"]),
                      kit.esc(row["reference"]), answer, _result_cell(row)])
    parts.append(kit.table(["image", "id", "question", "reference", "answer", "result"], cells))
    path.write_text(kit.html_page(f"GeoChat evaluation: {metrics['task']}", parts))


def evaluate_geochat(cfg: EvalGeoChatConfig) -> dict[str, Any]:
    """Run (or load) the answers, score them, write metrics.json / report.html (+ predictions.jsonl)."""
    cfg.validate()
    records = load_records(cfg.data)
    if cfg.limit is not None:
        records = records[:cfg.limit]
    out_dir = check_output_dir(cfg.output or Path("runs") / "eval_geochat" / cfg.task)
    image_errors: list[str] = []
    if cfg.predictions:
        preds = load_predictions(cfg.predictions)
        out_dir.mkdir(parents=True, exist_ok=True)
    else:  # everything a model run needs is checked before the model is loaded
        check_images(records, cfg.images)
        out_dir.mkdir(parents=True, exist_ok=True)
        preds = run_inference(cfg, records, out_dir, image_errors)
    metrics, rows = score(cfg.task, records, preds, cfg.box_match, cfg.iou_threshold)
    if image_errors:
        metrics["image_errors"] = image_errors
    metrics["source"] = "predictions" if cfg.predictions else "model"
    metrics["model"] = cfg.model
    metrics["adapter"] = cfg.adapter
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    write_report(out_dir / "report.html", metrics, rows, cfg.images, cfg.report_examples)
    metrics["output"] = str(out_dir)
    return metrics
