"""Hostile inputs for the evaluation and export tools: ``eval_retrieval.py``, ``eval_zeroshot.py``, ``eval_suite.py``,
``export_vision_tower.py``."""

from __future__ import annotations

import json
from pathlib import Path

from tests.hostile import files as f
from tests.hostile.assets import Assets
from tests.hostile.corpus import Case

RETRIEVAL, ZEROSHOT, EXPORT = "eval_retrieval.py", "eval_zeroshot.py", "export_vision_tower.py"
SUITE = "eval_suite.py"


def weights(ws: Path) -> Path:
    return Assets.of(ws).copy("clip", ws / "in" / "run") / "final.safetensors"


def broken_weights(ws: Path, kind: str) -> Path:
    """``torchscript`` (a real archive), ``empty`` (0 bytes .pt) or ``cut`` (half a safetensors file)."""
    if kind == "torchscript":
        return Assets.of(ws).copy("torchscript", ws / "in" / "ViT-B-32.pt")
    if kind == "empty":
        path = ws / "in" / "model.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
        return path
    return f.truncate(weights(ws), 0.5)


def captions(ws: Path, images: int = 3) -> Path:
    names = {f"{i}.png": i for i in range(images)}
    return f.karpathy(ws / "in" / "rsitmd", [f.caption_entry(n, "test", f"scene number {i}.") for n, i in names.items()],
                      images=names)


def retrieval(ws: Path, *extra: str, checkpoint: Path | None = None, data: Path | None = None) -> list[str]:
    data = data or captions(ws)
    return ["--model", "rs-tiny", "--checkpoint", str(checkpoint or weights(ws)), "--captions", str(data),
            "--output", str(ws / "out"), "--device", "cpu", "--workers", "0", "--report-queries", "0", *extra]


def zeroshot(ws: Path, *extra: str, checkpoint: Path | None = None, data: Path | None = None) -> list[str]:
    data = data or f.scene_folders(ws / "in" / "aid")
    return ["--model", "rs-tiny", "--checkpoint", str(checkpoint or weights(ws)), "--data", str(data),
            "--output", str(ws / "out"), "--device", "cpu", "--workers", "0", *extra]


def export(ws: Path, *extra: str, checkpoint: Path | None = None, model: str = "rs-tiny") -> list[str]:
    return ["--checkpoint", str(checkpoint or weights(ws)), "--model", model, "--output", str(ws / "out"), *extra]


def _not_json(ws: Path) -> list[str]:
    path = ws / "in" / "dataset.json"
    path.parent.mkdir(parents=True)
    path.write_text('{"images": [\n  {"filename": "a.png",\n')
    return retrieval(ws, data=path)


def _images_missing(ws: Path) -> list[str]:
    data = captions(ws)
    for p in (data / "images").iterdir():
        p.unlink()
    return retrieval(ws, data=data)


def _one_corrupt(ws: Path) -> list[str]:
    data = captions(ws, images=4)
    f.corrupt(data / "images" / "2.png")
    return retrieval(ws, data=data)


def _one_skipped(ws: Path) -> None:
    metrics = json.loads((ws / "out" / "metrics.json").read_text())
    assert metrics["n_images"] == 3 and metrics["n_skipped_images"] == 1, metrics


def _empty_folder(ws: Path, name: str) -> Path:
    path = ws / "in" / name
    path.mkdir(parents=True)
    return path


def _a_file(ws: Path) -> Path:
    path = ws / "in" / "classes.txt"
    path.parent.mkdir(parents=True)
    path.write_text("farmland\nharbor\n")
    return path


def suite(ws: Path, text: str | None = None, *extra: str, checkpoint: Path | None = None) -> list[str]:
    """A suite file (``text``, default: one good class-folder set ``aid`` and one retrieval set) beside its data."""
    scenes = f.scene_folders(ws / "in" / "aid", per_class=3)
    captions(ws)
    path = ws / "in" / "suite.yaml"
    path.write_text(text if text is not None else
                    f"- {{name: aid, tasks: [zeroshot, knn], path: {scenes}}}\n"
                    f"- {{name: rsitmd, tasks: [retrieval], path: {ws / 'in' / 'rsitmd'}}}\n")
    return ["--model", "rs-tiny", "--checkpoint", str(checkpoint or weights(ws)), "--suite", str(path),
            "--output", str(ws / "out"), "--device", "cpu", "--workers", "0", *extra]


def _suite_meta(ws: Path) -> dict:
    return json.loads((ws / "out" / "suite_meta.json").read_text())


def _suite_missing_dataset(ws: Path) -> list[str]:
    argv = suite(ws)
    path = ws / "in" / "suite.yaml"
    path.write_text(path.read_text() + f"- {{name: rsicd, tasks: [retrieval], path: {ws / 'in' / 'nowhere.json'}}}\n")
    return argv


def _suite_one_skipped(ws: Path) -> None:
    status = {d["name"]: d["status"] for d in _suite_meta(ws)["datasets"]}
    assert status == {"aid": "ran", "rsitmd": "ran", "rsicd": "skipped"}, status


def _suite_corrupt_image(ws: Path) -> list[str]:
    argv = suite(ws)
    f.corrupt(sorted((ws / "in" / "aid" / "harbor").iterdir())[-1])  # a test image (the last by name)
    return argv


def _suite_corrupt_counted(ws: Path) -> None:
    zs = json.loads((ws / "out" / "suite.json").read_text())["zeroshot"]["aid"]
    assert zs["n_skipped_images"] == 1 and zs["n_images"] == 1, zs


def _suite_one_class(ws: Path) -> list[str]:
    argv = suite(ws)
    one = f.scene_folders(ws / "in" / "single", classes=("farmland",))
    path = ws / "in" / "suite.yaml"
    path.write_text(path.read_text() + f"- {{name: single, tasks: [knn], path: {one}}}\n")
    return argv


def _suite_one_failed(ws: Path) -> None:
    status = {d["name"]: (d["status"], d.get("reason", "")) for d in _suite_meta(ws)["datasets"]}
    assert status["single"][0] == "failed" and "at least 2 class folders" in status["single"][1], status
    assert status["aid"][0] == status["rsitmd"][0] == "ran", status


CASES = [
    # eval_retrieval
    Case(RETRIEVAL, "a TorchScript `--checkpoint`", "refused unless `--allow-torchscript`; nothing loaded",
         lambda ws: retrieval(ws, checkpoint=broken_weights(ws, "torchscript")), names=lambda ws: "--allow-torchscript",
         output=lambda ws: None),
    Case(RETRIEVAL, "a truncated `.safetensors` checkpoint", "one-line error naming it, before the model is built",
         lambda ws: retrieval(ws, checkpoint=broken_weights(ws, "cut")), names=lambda ws: "final.safetensors",
         output=lambda ws: None),
    Case(RETRIEVAL, "a zero-byte `.pt` checkpoint", "one-line error naming it (was an IndexError)",
         lambda ws: retrieval(ws, checkpoint=broken_weights(ws, "empty")), names=lambda ws: str(ws / "in" / "model.pt"),
         output=lambda ws: None),
    Case(RETRIEVAL, "`--model` other than the checkpoint's", "one-line error naming the model the weights fit",
         lambda ws: retrieval(ws, "--model", "ViT-B-32"), names=lambda ws: "shapes match rs-tiny", output=lambda ws: None),
    Case(RETRIEVAL, "a caption json that is not JSON", "one-line error naming file:line", _not_json,
         names=lambda ws: str(ws / "in" / "dataset.json"), output=lambda ws: None),
    Case(RETRIEVAL, "`--captions` on a folder with no json", "one-line error naming it",
         lambda ws: retrieval(ws, data=_empty_folder(ws, "rsicd")), names=lambda ws: str(ws / "in" / "rsicd"),
         output=lambda ws: None),
    Case(RETRIEVAL, "a caption set whose images are all missing", "one-line error before the model is built",
         _images_missing, names=lambda ws: "rsitmd", output=lambda ws: None),
    Case(RETRIEVAL, "one corrupt image in the set", "left out with its captions and counted (`n_skipped_images`)",
         _one_corrupt, rc=0, check=_one_skipped),
    Case(RETRIEVAL, "`--shards` on an empty folder", "one-line error naming it",
         lambda ws: ["--model", "rs-tiny", "--checkpoint", "none", "--shards", str(_empty_folder(ws, "shards")),
                     "--output", str(ws / "out"), "--device", "cpu"],
         names=lambda ws: str(ws / "in" / "shards"), output=lambda ws: None),
    # eval_zeroshot
    Case(ZEROSHOT, "`--data` is a file", "one-line error naming it",
         lambda ws: zeroshot(ws, data=_a_file(ws)), names=lambda ws: str(ws / "in" / "classes.txt"), output=lambda ws: None),
    Case(ZEROSHOT, "`--data` is an empty folder", "one-line error naming it",
         lambda ws: zeroshot(ws, data=_empty_folder(ws, "aid")), names=lambda ws: str(ws / "in" / "aid"),
         output=lambda ws: None),
    Case(ZEROSHOT, "a truncated checkpoint", "one-line error naming it, before the model is built",
         lambda ws: zeroshot(ws, checkpoint=broken_weights(ws, "cut")), names=lambda ws: "final.safetensors",
         output=lambda ws: None),
    Case(ZEROSHOT, "a TorchScript checkpoint", "refused unless `--allow-torchscript`",
         lambda ws: zeroshot(ws, checkpoint=broken_weights(ws, "torchscript")), names=lambda ws: "--allow-torchscript",
         output=lambda ws: None),
    # eval_suite
    Case(SUITE, "a suite file that is not YAML", "one-line error naming it, before the model is built",
         lambda ws: suite(ws, "- {name: a, tasks: [knn"), names=lambda ws: str(ws / "in" / "suite.yaml"),
         output=lambda ws: None),
    Case(SUITE, "a suite entry with an unknown task", "one-line error naming the entry and the known tasks",
         lambda ws: suite(ws, "- {name: aid, tasks: [linear], path: x}"), names=lambda ws: "entry 1 (aid)",
         output=lambda ws: None),
    Case(SUITE, "a dataset of the suite that is not there", "skipped with a line saying so; the others run",
         _suite_missing_dataset, rc=0, check=_suite_one_skipped),
    Case(SUITE, "one corrupt image in a class folder", "left out and counted (`n_skipped_images`); the split stays",
         _suite_corrupt_image, rc=0, check=_suite_corrupt_counted),
    Case(SUITE, "a class-folder set with one class", "that dataset listed as failed with the reason; the others run",
         _suite_one_class, rc=0, check=_suite_one_failed),
    Case(SUITE, "a truncated checkpoint", "one-line error naming it, before anything is embedded",
         lambda ws: suite(ws, None, checkpoint=broken_weights(ws, "cut")), names=lambda ws: "final.safetensors",
         output=lambda ws: None),
    # export_vision_tower
    Case(EXPORT, "`--model ViT-B-32` for rs-tiny weights", "one-line error naming the model the weights fit (was 1,500 characters)",
         lambda ws: export(ws, model="ViT-B-32"), names=lambda ws: "shapes match rs-tiny", output=lambda ws: None),
    Case(EXPORT, "a TorchScript checkpoint", "refused unless `--allow-torchscript`",
         lambda ws: export(ws, checkpoint=broken_weights(ws, "torchscript")), names=lambda ws: "--allow-torchscript",
         output=lambda ws: None),
    Case(EXPORT, "a zero-byte checkpoint", "one-line error naming it",
         lambda ws: export(ws, checkpoint=broken_weights(ws, "empty")), names=lambda ws: str(ws / "in" / "model.pt"),
         output=lambda ws: None),
    Case(EXPORT, "`--image-size 90` (not a multiple of the patch)", "one-line error with the nearest valid sizes",
         lambda ws: export(ws, "--image-size", "90"), names=lambda ws: "90", output=lambda ws: None),
]
