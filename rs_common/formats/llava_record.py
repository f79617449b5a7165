"""The LLaVA record (GeoChat_Instruct json / jsonl): the one owner of its shape, its reading and its checks.

A record is ``{"id", "image", "conversations": [{"from": "human", "value": "<image>\\n..."}, {"from": "gpt", ...}]}``
with ``image`` a path relative to an image root (the ``--images`` folder of fine-tuning and evaluation). A file
holds a json list of records (``.json``) or one record per line (``.jsonl``). Builders write records with
:func:`make_record`; readers take them with :func:`read_records` (checked) or :func:`load_json_records` (parsed
only). Every problem is the caller's error type (``InstructError``, ``EvalError``...) with one line naming the
file, the record index and its id.
"""

from __future__ import annotations

import json
from pathlib import Path

from rs_common.formats.conversation import IMAGE_TOKEN, ConversationError, turn_texts

__all__ = ["IMAGE_TOKEN", "RecordError", "count_turns", "json_lines", "load_json_records", "make_conversation",
           "make_record", "qa_pairs", "read_records", "read_text_file", "strip_image_token", "validate_record"]


class RecordError(ValueError):
    """A malformed LLaVA record or records file (the default error type of this module)."""


def make_record(record_id: str, image: str, question: str, answer: str, **extra) -> dict:
    """A single-turn record: ``<image>\\n`` + ``question`` from human, ``answer`` from gpt; ``extra`` fields (e.g.
    ``task``) are kept beside ``id`` and ``image``."""
    return make_conversation(record_id, image, [(question, answer)], **extra)


def make_conversation(record_id: str, image: str, pairs, **extra) -> dict:
    """A record of one or more ``(question, answer)`` pairs about one image, as consecutive human/gpt turns (GeoChat_
    Instruct's multi-turn conversations): ``<image>\\n`` opens the first human turn only."""
    pairs = list(pairs)
    if not pairs:
        raise RecordError(f"record {record_id!r}: a conversation needs at least one question and answer")
    turns = []
    for k, (question, answer) in enumerate(pairs):
        turns += [{"from": "human", "value": f"{IMAGE_TOKEN}\n{question}" if k == 0 else question},
                  {"from": "gpt", "value": answer}]
    return {"id": record_id, "image": image, **extra, "conversations": turns}


def qa_pairs(rec: dict) -> list[tuple[str, str]]:
    """``(question, answer)`` of each round of a record, the image placeholder taken out of the questions."""
    conv = rec["conversations"]
    return [(strip_image_token(conv[i]["value"]), conv[i + 1]["value"]) for i in range(0, len(conv) - 1, 2)]


def count_turns(rec: dict) -> int:
    """Question/answer rounds of a record (1 for a single-turn record)."""
    return len(rec.get("conversations") or []) // 2


def strip_image_token(text: str) -> str:
    """A human turn without its image placeholder: the question as a person reads it."""
    return text.replace(IMAGE_TOKEN + "\n", "").replace(IMAGE_TOKEN, "").strip()


def validate_record(rec, index: int, error: type[Exception] = RecordError) -> None:
    """Raise ``error`` naming the record (``id`` and index) when ``rec`` is not a usable LLaVA record: an image
    path, alternating human/gpt turns with string values, each question answered, exactly one ``<image>`` (in the
    first human turn)."""
    name = f"record {index}" + (f" (id {rec.get('id')!r})" if isinstance(rec, dict) and "id" in rec else "")
    if not isinstance(rec, dict):
        raise error(f"{name}: must be an object, got {type(rec).__name__}")
    if not rec.get("image"):
        raise error(f"{name}: missing 'image' (a path relative to the image folder)")
    if not isinstance(rec["image"], str):
        raise error(f"{name}: 'image' must be a path string, got {type(rec['image']).__name__}")
    conv = rec.get("conversations")
    if not isinstance(conv, list) or len(conv) < 2:
        raise error(f"{name}: 'conversations' must be a list of at least one human and one gpt turn")
    for i, turn in enumerate(conv):
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
            raise error(f"{name}: turn {i} must be {{'from': ..., 'value': str}}")
    if len(conv) % 2:
        raise error(f"{name}: {len(conv)} turns; the last human turn has no gpt answer")
    try:
        turn_texts(conv)
    except ConversationError as exc:
        raise error(f"{name}: {exc}") from None
    if IMAGE_TOKEN not in conv[0]["value"]:
        raise error(f"{name}: the first human turn has no {IMAGE_TOKEN!r}")
    extra = sum(t["value"].count(IMAGE_TOKEN) for t in conv)
    if extra != 1:
        raise error(f"{name}: {extra} {IMAGE_TOKEN!r} tokens; exactly one (in the first human turn) is allowed")


def read_text_file(path, error: type[Exception], what: str = "data file",
                   expected: str = "a LLaVA-format .json or .jsonl file") -> str:
    """The UTF-8 text of ``path`` (``what``, ``expected`` word the messages); a folder, a missing file or other
    bytes are ``error`` naming it."""
    path = Path(path)
    if path.is_dir():
        raise error(f"{what} {path} is a folder (expected {expected})")
    if not path.is_file():
        raise error(f"{what} not found: {path}")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not a UTF-8 text file ({exc.reason} at byte {exc.start})") from None


def json_lines(text: str, path, error: type[Exception]) -> list[tuple[int, object]]:
    """``(line number, value)`` of each non-empty line of a jsonl text; a bad line is ``error`` naming file and line."""
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                out.append((n, json.loads(line)))
            except json.JSONDecodeError as exc:
                raise error(f"{path}:{n}: not valid JSON: {exc}") from None
    return out


def load_json_records(path, error: type[Exception] = RecordError):
    """The parsed content of a ``.json`` or ``.jsonl`` file; a missing or malformed file raises ``error`` naming it."""
    text = read_text_file(path, error)
    try:
        if Path(path).suffix == ".jsonl":
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(f"{path}: not valid json: {exc}") from None


def read_records(path, error: type[Exception] = RecordError) -> list[dict]:
    """Load and validate a LLaVA-format json list (or jsonl); errors name the file, record index and id."""
    data = load_json_records(path, error)
    if not isinstance(data, list):
        raise error(f"{path}: the top level must be a list of records")
    for i, rec in enumerate(data):
        try:
            validate_record(rec, i, error)
        except error as exc:
            raise error(f"{path}: {exc}") from None
    return data
