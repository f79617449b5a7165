"""Questions to a GeoChat about one image: the answer, its boxes parsed robustly, and the boxes drawn.

One question (``--prompt``), or a conversation (``--chat``): each question is asked with the whole history before it
in the vicuna_v1 template (:func:`chat_prompt`; the image only in the first user turn, as GeoChat's CLI does), the
questions come from ``--question`` (repeated), a ``--questions`` file (one per line) or stdin (an empty line or EOF
ends), each answer is printed as it comes, and ``--transcript`` saves the conversation as a LLaVA record. The image
goes through the same preprocessing as training (:mod:`vlm_finetune.image_prep`, the model's
``config.image_aspect_ratio``).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from rs_common.config import ConfigError
from rs_common.files import atomic_write_json
from rs_common.formats.conversation import IMAGE_TOKEN, build_prompt
from rs_common.formats.llava_record import strip_image_token
from vlm_finetune.boxes import parse_boxes
from vlm_finetune.evaluate import EvalError, answer_question, generate_answer, load_for_inference
from vlm_finetune.report import draw_grid_boxes


@dataclass
class InferConfig:
    model: str = field(default="", metadata={"help": "HF Llava GeoChat dir (launch/convert_geochat.py or finetune_geochat.py output)", "metavar": "DIR"})
    adapter: str = field(default="", metadata={"help": "peft LoRA adapter dir to apply (finetune_geochat.py's OUTPUT/adapter)"})
    image: str = field(default="", metadata={"help": "image file"})
    prompt: str = field(default="", metadata={"help": "question, with a task token when wanted: '[refer] the plane on the left' (with --chat: the first one)"})
    chat: bool = field(default=False, metadata={"help": "a conversation: each question sees the earlier turns; questions from --question, --questions or stdin, one per line (an empty line or EOF ends)"})
    question: list[str] = field(default_factory=list, metadata={"help": "a question of the --chat conversation; repeat the flag for the next turns (implies --chat)", "metavar": "TEXT"})
    questions: str = field(default="", metadata={"help": "text file with one --chat question per line, blank lines skipped (implies --chat)", "metavar": "FILE"})
    transcript: str = field(default="", metadata={"help": "save the --chat conversation here as a LLaVA record (json list of one record)", "metavar": "JSON"})
    output: str = field(default="", metadata={"help": "where the image with the parsed boxes drawn goes (default: IMAGE_boxes.png beside it; with --chat: the boxes of every answer, only when given)", "metavar": "PNG"})
    max_new_tokens: int = field(default=128, metadata={"help": "longest answer"})
    device: str = field(default="cpu", metadata={"help": "cpu or cuda"})

    def validate(self) -> None:
        if self.question or self.questions or self.transcript:
            self.chat = True
        if not self.model or not self.image or not (self.prompt or self.chat):
            raise ConfigError("--model, --image and --prompt (or --chat) are required")
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
    return check_output_file(out, "--output", "an image", "scene_boxes.png", Image.registered_extensions(),
                             ".png or .jpg")


def check_output_file(out: Path, flag: str, kind: str, example: str, suffixes: Iterable[str], use: str) -> Path:
    """``out`` when a file can be written there (not a folder, its folder exists, a suffix in ``suffixes``), else an
    EvalError naming ``flag``."""
    if out.is_dir():
        raise EvalError(f"{flag} {out} is a folder (expected {kind} file name, e.g. {example})")
    if not out.parent.is_dir():
        raise EvalError(f"{flag} {out}: its folder {out.parent} does not exist")
    if out.suffix.lower() not in suffixes:
        raise EvalError(f"{flag} {out}: unknown {kind.split()[-1]} extension {out.suffix!r} (use {use})")
    return out


def run_infer(cfg: InferConfig) -> dict:
    """Answer ``cfg.prompt``; boxes in the answer (``{<x1><y1><x2><y2>|θ}``) are parsed, malformed ones counted
    (never an error), and drawn on a copy of the image. The image and output path are checked before the model
    loads. With ``cfg.chat``: :func:`run_chat`."""
    if cfg.chat:
        return run_chat(cfg)
    image = read_image(cfg.image)
    out = output_path(cfg)
    model, processor = load_for_inference(cfg.model, cfg.adapter or None, cfg.device)
    answer = answer_question(model, processor, image, cfg.prompt, cfg.max_new_tokens)
    parsed = parse_boxes(answer)
    draw_grid_boxes(image, parsed.boxes, (230, 0, 0), width=max(2, min(image.size) // 150)).save(out)
    print(answer)
    return {"answer": answer, "boxes": [b.__dict__ for b in parsed.boxes], "n_malformed_boxes": parsed.n_malformed,
            "drawn": str(out)}


# ---------------------------------------------------------------- conversations


def chat_prompt(history: list[tuple[str, str]], question: str) -> str:
    """The vicuna_v1 prompt that asks ``question`` after the ``(question, answer)`` turns of ``history``; the image
    only in the first user turn (:func:`rs_common.formats.conversation.build_prompt` of ``<image>\nq1, a1, q2``
    with the generation prompt)."""
    turns = [text for turn in history for text in turn] + [question]
    turns[0] = f"{IMAGE_TOKEN}\n{turns[0]}"
    return build_prompt(turns, add_generation_prompt=True)


def chat_record(image: str, history: list[tuple[str, str]], record_id: str | None = None) -> dict:
    """The conversation as a LLaVA record (``<image>`` in the first human turn), ready for fine-tuning data."""
    conversations = []
    for i, (question, answer) in enumerate(history):
        conversations += [{"from": "human", "value": f"{IMAGE_TOKEN}\n{question}" if i == 0 else question},
                          {"from": "gpt", "value": answer}]
    return {"id": record_id or f"chat_{Path(image).stem}", "image": image, "conversations": conversations}


def read_question_file(path) -> list[str]:
    """The non-blank lines of a questions file, or an EvalError naming it."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise EvalError(f"--questions {p}: cannot read it as a text file ({type(exc).__name__})") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def chat_questions(cfg: InferConfig, file_questions: list[str], stdin=None) -> Iterator[str]:
    """``--prompt``, then each ``--question``, then the questions file; with neither of the last two, lines of stdin
    until an empty line or EOF (a ``USER>`` prompt on stderr when it is a terminal). ``<image>`` typed in a question
    is dropped: the image is in the first turn already."""
    asked = [*([cfg.prompt] if cfg.prompt else []), *cfg.question, *file_questions]
    yield from (strip_image_token(q) for q in asked if strip_image_token(q))
    if cfg.question or file_questions or cfg.questions:
        return
    stream = sys.stdin if stdin is None else stdin
    interactive = hasattr(stream, "isatty") and stream.isatty()
    while True:
        if interactive:
            print("USER> ", end="", file=sys.stderr, flush=True)
        line = strip_image_token(stream.readline())
        if not line:
            return
        yield line


def run_chat(cfg: InferConfig, stdin=None) -> dict:
    """A conversation about ``cfg.image``: each question is asked with the history before it (:func:`chat_prompt`),
    each answer printed as it comes; the transcript (a json list of one LLaVA record) is rewritten after every turn
    when ``cfg.transcript`` is set; with ``cfg.output`` the boxes of every answer are drawn. Files are checked before
    the model loads."""
    image = read_image(cfg.image)
    drawn = output_path(cfg) if cfg.output else None
    transcript = check_output_file(Path(cfg.transcript), "--transcript", "a json", "chat.json", (".json",),
                                   ".json") if cfg.transcript else None
    file_questions = read_question_file(cfg.questions) if cfg.questions else []
    model, processor = load_for_inference(cfg.model, cfg.adapter or None, cfg.device)
    history: list[tuple[str, str]] = []
    turns, boxes = [], []
    for question in chat_questions(cfg, file_questions, stdin):
        answer = generate_answer(model, processor, image, chat_prompt(history, question), cfg.max_new_tokens)
        history.append((question, answer))
        print(answer, flush=True)
        parsed = parse_boxes(answer)
        boxes += parsed.boxes
        turns.append({"question": question, "answer": answer, "boxes": [b.__dict__ for b in parsed.boxes],
                      "n_malformed_boxes": parsed.n_malformed})
        if transcript is not None:
            atomic_write_json(transcript, [chat_record(cfg.image, history)])
    if drawn is not None:
        draw_grid_boxes(image, boxes, (230, 0, 0), width=max(2, min(image.size) // 150)).save(drawn)
    return {"turns": turns, "transcript": str(transcript) if transcript is not None and history else None,
            "drawn": str(drawn) if drawn is not None else None}
