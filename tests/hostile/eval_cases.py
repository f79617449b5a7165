"""Hostile inputs for the evaluation and export tools: ``eval_retrieval.py``, ``eval_zeroshot.py``,
``export_vision_tower.py``."""

from __future__ import annotations

import json
from pathlib import Path

from tests.hostile import files as f
from tests.hostile.assets import Assets
from tests.hostile.corpus import Case

RETRIEVAL, ZEROSHOT, EXPORT = "eval_retrieval.py", "eval_zeroshot.py", "export_vision_tower.py"


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
