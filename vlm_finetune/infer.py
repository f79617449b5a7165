"""One question to a GeoChat about one image: the answer, its boxes parsed robustly, and the boxes drawn."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from rs_common.config import ConfigError
from vlm_finetune.boxes import parse_boxes
from vlm_finetune.evaluate import EvalError, answer_question, load_for_inference
from vlm_finetune.report import draw_grid_boxes


@dataclass
class InferConfig:
    model: str = field(default="", metadata={"help": "HF Llava GeoChat dir (launch/convert_geochat.py or finetune_geochat.py output)", "metavar": "DIR"})
    adapter: str = field(default="", metadata={"help": "peft LoRA adapter dir to apply (finetune_geochat.py's OUTPUT/adapter)"})
    image: str = field(default="", metadata={"help": "image file"})
    prompt: str = field(default="", metadata={"help": "question, with a task token when wanted: '[refer] the plane on the left'"})
    output: str = field(default="", metadata={"help": "where the image with the parsed boxes drawn goes (default: IMAGE_boxes.png beside it)", "metavar": "PNG"})
    max_new_tokens: int = field(default=128, metadata={"help": "longest answer"})
    device: str = field(default="cpu", metadata={"help": "cpu or cuda"})

    def validate(self) -> None:
        if not self.model or not self.image or not self.prompt:
            raise ConfigError("--model, --image and --prompt are required")
        if self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.device not in ("cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ConfigError(f"device {self.device!r}: use cpu or cuda")


def read_image(path):
    """The image at ``path`` as RGB (fully decoded), or an EvalError naming the file."""
    from PIL import Image

    p = Path(path)
    if p.is_dir():
        raise EvalError(f"--image {p} is a folder (expected an image file)")
    try:
        with Image.open(p) as im:
            return im.convert("RGB")
    except Exception as exc:  # noqa: BLE001 - missing, not an image, truncated data, decompression bomb
        raise EvalError(f"{p}: cannot read the image ({type(exc).__name__}: {exc})") from None


def output_path(cfg: InferConfig) -> Path:
    """Where the drawn image goes, checked before the model loads: an existing folder, a missing parent folder or
    an extension PIL cannot write are EvalErrors."""
    from PIL import Image

    out = Path(cfg.output) if cfg.output else Path(cfg.image).with_name(Path(cfg.image).stem + "_boxes.png")
    if out.is_dir():
        raise EvalError(f"--output {out} is a folder (expected an image file name, e.g. scene_boxes.png)")
    if not out.parent.is_dir():
        raise EvalError(f"--output {out}: its folder {out.parent} does not exist")
    if out.suffix.lower() not in Image.registered_extensions():
        raise EvalError(f"--output {out}: unknown image extension {out.suffix!r} (use .png or .jpg)")
    return out


def run_infer(cfg: InferConfig) -> dict:
    """Answer ``cfg.prompt``; boxes in the answer (``{<x1><y1><x2><y2>|θ}``) are parsed, malformed ones counted
    (never an error), and drawn on a copy of the image. The image and output path are checked before the model
    loads."""
    image = read_image(cfg.image)
    out = output_path(cfg)
    model, processor = load_for_inference(cfg.model, cfg.adapter or None, cfg.device)
    answer = answer_question(model, processor, image, cfg.prompt, cfg.max_new_tokens)
    parsed = parse_boxes(answer)
    draw_grid_boxes(image, parsed.boxes, (230, 0, 0), width=max(2, min(image.size) // 150)).save(out)
    print(answer)
    return {"answer": answer, "boxes": [b.__dict__ for b in parsed.boxes], "n_malformed_boxes": parsed.n_malformed,
            "drawn": str(out)}
