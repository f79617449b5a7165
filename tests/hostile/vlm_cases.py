"""Hostile inputs for the GeoChat tools: ``finetune_geochat.py``, ``build_instruct.py``, ``convert_geochat.py``,
``geochat_infer.py``, ``eval_geochat.py`` (a tiny GeoChat from :mod:`tests.hostile.assets` stands in for a 7B one)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from tests.hostile import files as f
from tests.hostile.assets import Assets
from tests.hostile.corpus import Case

FINETUNE, INSTRUCT, CONVERT, INFER, EVAL = ("finetune_geochat.py", "build_instruct.py", "convert_geochat.py",
                                            "geochat_infer.py", "eval_geochat.py")


def model(ws: Path) -> Path:
    return Assets.of(ws).copy("geochat", ws / "in" / "geochat")


def data(ws: Path) -> Path:
    """The 4-record instruction json with its images, at ws/in/data."""
    dest = ws / "in" / "data"
    shutil.copytree(Assets.of(ws).geochat_data(), dest)
    return dest


def cut_weights(ws: Path) -> Path:
    f.truncate(model(ws) / "model.safetensors", 0.5)
    return ws / "in" / "geochat"


def finetune(ws: Path, *extra: str, geochat: Path | None = None, records: Path | None = None) -> list[str]:
    folder = data(ws) if records is None else records.parent
    return ["--model", str(geochat or model(ws)), "--data", str(records or folder / "instruct.json"), "--images",
            str(folder), "--output", str(ws / "out"), "--max-steps", "2", "--batch-size", "2", "--num-workers", "0",
            "--logging-steps", "1", "--save-steps", "100", "--max-length", "512", "--lora-r", "4", "--bf16", "false",
            *extra]


def _missing_images(ws: Path, how_many: int) -> Path:
    folder = data(ws)
    for i in range(how_many):
        (folder / "images" / f"{i}.png").unlink()
    return folder / "instruct.json"


def _dropped_counted(ws: Path) -> None:
    summary = json.loads((ws / "out" / "finetune.json").read_text())
    assert summary["dropped"].get("missing_image") == 1 and summary["samples"] == 3, summary["dropped"]


def _not_json(ws: Path) -> Path:
    folder = data(ws)
    (folder / "instruct.json").write_text('[{"id": "r0", "image": \n')
    return folder / "instruct.json"


def _hold_lock(ws: Path):
    from rs_common.guards import RunLock

    return RunLock(ws / "out", what="fine-tuning run")


def infer(ws: Path, image: Path, geochat: Path | None = None) -> list[str]:
    (ws / "out").mkdir(parents=True, exist_ok=True)
    return ["--model", str(geochat or model(ws)), "--image", str(image), "--prompt", "what is this",
            "--output", str(ws / "out" / "boxes.png"), "--max-new-tokens", "4"]


def evaluate(ws: Path, *extra: str, records: Path | None = None) -> list[str]:
    folder = data(ws) if records is None else records.parent
    return ["--task", "classify", "--data", str(records or folder / "instruct.json"), "--images", str(folder),
            "--output", str(ws / "out"), *extra]


def _bad_predictions(ws: Path) -> list[str]:
    path = ws / "in" / "predictions.jsonl"
    path.parent.mkdir(parents=True)
    path.write_text('{"question_id": "r0", "answer": "a green field"}\n["not", "an", "object"]\n')
    return evaluate(ws, "--predictions", str(path))


def _a_text_file(ws: Path, name: str) -> Path:
    path = ws / "in" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("not what it says")
    return path


def _empty_folder(ws: Path, name: str) -> Path:
    path = ws / "in" / name
    path.mkdir(parents=True)
    return path


def _bench(ws: Path, bench_lines: list[str] | None, answer_lines: list[str]) -> list[str]:
    """A GeoChat-Bench folder with ``aid.jsonl`` (none when ``bench_lines`` is None) and an answers folder."""
    bench, answers = ws / "in" / "bench", ws / "in" / "answers"
    bench.mkdir(parents=True)
    answers.mkdir(parents=True)
    if bench_lines is not None:
        (bench / "aid.jsonl").write_text("\n".join(bench_lines) + "\n")
    (answers / "aid.jsonl").write_text("\n".join(answer_lines) + "\n")
    return ["--bench", str(bench), "--answers", str(answers), "--output", str(ws / "out")]


AID_LINES = ['{"question_id": "airport/a.jpg", "image": "a.jpg", "text": "Classify", "ground_truth": "airport"}',
             "not json at all",
             '{"question_id": "forest/b.jpg", "image": "b.jpg", "text": "Classify", "ground_truth": "forest"}']


def _bench_counted(ws: Path) -> None:
    aid = json.loads((ws / "out" / "metrics.json").read_text())["aid"]
    assert (aid["n_lines"], aid["n_records"], aid["n_malformed"], aid["n_no_answer"]) == (3, 2, 1, 1), aid
    assert aid["accuracy"] == 50.0 and aid["answers"]["n_malformed"] == 1, aid


CASES = [
    # finetune_geochat
    Case(FINETUNE, "`--learning-rate -1`", "refused before any work",
         lambda ws: finetune(ws, "--learning-rate", "-1"), names=lambda ws: "learning_rate", output=lambda ws: None),
    Case(FINETUNE, "a truncated `model.safetensors` in `--model`", "one-line error naming it, before the model loads",
         lambda ws: finetune(ws, geochat=cut_weights(ws)), names=lambda ws: "model.safetensors", output=lambda ws: None),
    Case(FINETUNE, "an instruction json that is not JSON", "one-line error naming it, before the model loads",
         lambda ws: finetune(ws, records=_not_json(ws)), names=lambda ws: "instruct.json", output=lambda ws: None),
    Case(FINETUNE, "a record whose image is missing", "checked when the data loads: dropped and counted in finetune.json",
         lambda ws: finetune(ws, records=_missing_images(ws, 1)), rc=0, check=_dropped_counted, timeout=300),
    Case(FINETUNE, "every image missing", "one-line error naming the json and the first missing file, before the model loads",
         lambda ws: finetune(ws, records=_missing_images(ws, 4)), names=lambda ws: "instruct.json", output=lambda ws: None),
    Case(FINETUNE, "a second run on a folder a live run holds", "refused, naming the holder's pid",
         lambda ws: finetune(ws), names=lambda ws: f"pid {os.getpid()}", before=_hold_lock),
    # build_instruct
    Case(INSTRUCT, "an empty input folder", "one-line error (no image, nothing to write)",
         lambda ws: ["--input", f"folders:{_empty_folder(ws, 'aid')}", "--output", str(ws / "out" / "i.json")],
         names=lambda ws: "aid", output=lambda ws: None),
    Case(INSTRUCT, "`--output` is a folder", "one-line error naming it",
         lambda ws: ["--input", f"folders:{f.scene_folders(ws / 'in' / 'aid')}", "--output", str(_empty_folder(ws, "o"))],
         names=lambda ws: str(ws / "in" / "o"), output=lambda ws: None),
    # convert_geochat
    Case(CONVERT, "`--llava-checkpoint` on an empty folder", "one-line error naming it",
         lambda ws: ["--llava-checkpoint", str(_empty_folder(ws, "llava")), "--output", str(ws / "out")],
         names=lambda ws: str(ws / "in" / "llava"), output=lambda ws: None),
    Case(CONVERT, "`--llava-checkpoint` on a file", "one-line error naming it",
         lambda ws: ["--llava-checkpoint", str(_a_text_file(ws, "llava.bin")), "--output", str(ws / "out")],
         names=lambda ws: str(ws / "in" / "llava.bin"), output=lambda ws: None),
    # geochat_infer
    Case(INFER, "`--image` that is not an image", "one-line error naming it, before the model loads",
         lambda ws: infer(ws, _a_text_file(ws, "scene.png")), names=lambda ws: str(ws / "in" / "scene.png"),
         output=lambda ws: None),
    Case(INFER, "a GeoChat folder with truncated weights", "one-line error naming the file",
         lambda ws: infer(ws, f.image(ws / "in" / "scene.png"), geochat=cut_weights(ws)),
         names=lambda ws: "model.safetensors", output=lambda ws: None),
    # eval_geochat
    Case(EVAL, "`--data` that is not JSON", "one-line error naming it",
         lambda ws: evaluate(ws, "--predictions", str(_a_text_file(ws, "p.jsonl")), records=_not_json(ws)),
         names=lambda ws: "instruct.json", output=lambda ws: None),
    Case(EVAL, "a predictions line that is not an object", "one-line error naming file:line", _bad_predictions,
         names=lambda ws: "predictions.jsonl", output=lambda ws: None),
    Case(EVAL, "`--bench` on a folder with none of GeoChat-Bench's files", "one-line error naming it and the files",
         lambda ws: _bench(ws, None, ['{"question_id": "x", "answer": "y"}']), names=lambda ws: str(ws / "in" / "bench"),
         output=lambda ws: None),
    Case(EVAL, "a bench line and an answers line that are not JSON objects",
         "each counted (`n_malformed`), the question without an answer scored wrong; the rest scored",
         lambda ws: _bench(ws, AID_LINES, ['{"question_id": "airport/a.jpg", "image_id": "a.jpg", "answer": "Air port."}',
                                           "[1, 2]"]), rc=0, check=_bench_counted),
]
