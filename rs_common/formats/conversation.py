"""The vicuna_v1 conversation template (LLaVA-1.5 / GeoChat): the one owner of every prompt, and loss masking.

Every vicuna_v1 prompt of the toolkit (fine-tuning, evaluation, inference, demos) is built here: :func:`build_prompt`
for text, :func:`generation_prompt` for one question about one image, :func:`tokenize_with_labels` for training ids.

LLaVA's ``conv_vicuna_v1`` is ``SeparatorStyle.TWO`` with ``sep=" "``, ``sep2="</s>"``, roles ``USER``/``ASSISTANT``:

    SYSTEM USER: q1 ASSISTANT: a1</s>USER: q2 ASSISTANT: a2</s>

(``get_prompt``: ``system + sep``, then ``role + ": " + message + seps[i % 2]`` per turn, ``role + ":"`` for an empty
one). The loss covers only the assistant answers and their closing ``</s>`` (LLaVA's ``preprocess_v1`` masks the
system, the user turns and each ``ASSISTANT:``). :func:`tokenize_with_labels` builds ids and labels from the pieces
(each prompt part, each answer, the eos id), never by searching the rendered string.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

IMAGE_TOKEN = "<image>"  # the image placeholder of LLaVA records and prompts
SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. "
          "The assistant gives helpful, detailed, and polite answers to the user's questions.")
ROLES = ("USER", "ASSISTANT")
ROLES_HF = ("user", "assistant")  # the same roles in transformers chat messages
SEP = " "
SEP2 = "</s>"
IGNORE_INDEX = -100
_HUMAN = ("human", "user")
_GPT = ("gpt", "assistant")


class ConversationError(ValueError):
    """A malformed conversation (roles not alternating human/gpt, empty turns, ...)."""


def turn_texts(turns: Sequence) -> list[str | None]:
    """Messages in order, human first: ``turns`` are LLaVA dicts ``{"from", "value"}`` or plain strings alternating
    human / gpt. A final ``None`` (or a missing last answer) asks for generation."""
    out: list[str | None] = []
    for i, turn in enumerate(turns):
        if isinstance(turn, Mapping):
            who = str(turn.get("from", "")).lower()
            want = _HUMAN if i % 2 == 0 else _GPT
            if who not in want:
                raise ConversationError(f"turn {i} is from {turn.get('from')!r} but must be from "
                                        f"{'human' if i % 2 == 0 else 'gpt'} (turns alternate human, gpt)")
            out.append(turn.get("value"))
        else:
            out.append(turn)
    return out


def build_prompt(turns: Sequence, system: str = SYSTEM, add_generation_prompt: bool = False) -> str:
    """The vicuna_v1 prompt of ``turns``, exactly as LLaVA's ``conv_vicuna_v1.get_prompt()``.

    ``add_generation_prompt``: when the last turn is a human one, end with ``"ASSISTANT:"`` (what GeoChat's
    inference appends as an empty assistant message)."""
    msgs = turn_texts(turns)
    if add_generation_prompt and len(msgs) % 2 == 1:
        msgs = [*msgs, None]
    return render(msgs, system)


def render(messages: Sequence[str | None], system: str | None = SYSTEM) -> str:
    """The template itself: ``system + " "`` (when given), then per message ``ROLE: message`` + its separator
    (``" "`` after a user turn, ``"</s>"`` after an assistant one), or ``ROLE:`` for an empty one."""
    seps = (SEP, SEP2)
    ret = system + SEP if system is not None else ""
    for i, message in enumerate(messages):
        role = ROLES[i % 2]
        ret += role + ": " + message + seps[i % 2] if message else role + ":"
    return ret


def generation_prompt(question: str, system: str = SYSTEM, image: bool = True) -> str:
    """The single-turn prompt that asks for an answer to ``question`` (about one image when ``image``):
    ``SYSTEM USER: <image>\nquestion ASSISTANT:``."""
    return build_prompt([f"{IMAGE_TOKEN}\n{question}" if image else question], system, add_generation_prompt=True)


def _encode(tokenizer, text: str, image_token: str, image_id: int, image_tokens: int) -> list[int]:
    """Token ids of ``text`` (no special tokens) with each ``image_token`` replaced by ``image_tokens`` image ids."""
    ids: list[int] = []
    for k, part in enumerate(text.split(image_token)):
        if k:
            ids.extend([image_id] * image_tokens)
        if part.strip():
            ids.extend(tokenizer.encode(part, add_special_tokens=False))
    return ids


def tokenize_with_labels(turns: Sequence, tokenizer, image_token: str = IMAGE_TOKEN, image_tokens: int = 1,
                         system: str = SYSTEM, add_bos: bool = True) -> tuple[list[int], list[int]]:
    """``(input_ids, labels)`` of the vicuna_v1 prompt of ``turns``; labels are ``-100`` everywhere except the
    assistant answer tokens and the ``</s>`` closing each answer.

    Pieces, tokenised one by one: ``<s>``, then per round ``[SYSTEM ]USER: q ASSISTANT:`` (masked), the answer
    (kept) and the eos id (kept). Each ``image_token`` in a human turn becomes ``image_tokens`` copies of the image
    token id (1 = the placeholder; the model's ``image_seq_length`` = the expanded HF Llava form). A final human
    turn without an answer gives a generation prompt ending in ``ASSISTANT:``.
    """
    msgs = turn_texts(turns)
    if not msgs:
        raise ConversationError("empty conversation")
    image_id = tokenizer.convert_tokens_to_ids(image_token)
    if image_id is None or image_id == tokenizer.unk_token_id:
        raise ConversationError(f"the tokenizer does not know the image token {image_token!r} "
                                "(vlm_finetune.geochat.prepare_tokenizer adds it)")
    eos = tokenizer.eos_token_id
    ids: list[int] = []
    labels: list[int] = []
    if add_bos and tokenizer.bos_token_id is not None:
        ids.append(tokenizer.bos_token_id)
        labels.append(IGNORE_INDEX)
    for r in range(0, len(msgs), 2):
        question = msgs[r]
        if not question:
            raise ConversationError(f"turn {r} (human) is empty")
        if image_token in "".join(m for m in msgs[r + 1:r + 2] if m):
            raise ConversationError(f"turn {r + 1} (gpt) holds {image_token!r}; images go in human turns")
        prefix = render([question, None], system if r == 0 else None)  # [SYSTEM ]USER: q ASSISTANT:
        piece = _encode(tokenizer, prefix, image_token, image_id, image_tokens)
        ids.extend(piece)
        labels.extend([IGNORE_INDEX] * len(piece))
        answer = msgs[r + 1] if r + 1 < len(msgs) else None
        if answer is None:
            if r + 1 < len(msgs) - 1:
                raise ConversationError(f"turn {r + 1} (gpt) is empty")
            break
        piece = tokenizer.encode(answer, add_special_tokens=False) + [eos]
        ids.extend(piece)
        labels.extend(piece)
    return ids, labels


def _jinja_text(text: str) -> str:
    """``text`` as a Jinja string literal."""
    import json

    return json.dumps(text)


# The same template as a Jinja chat template (what ``processor.apply_chat_template(messages)`` renders in plain
# transformers): an optional leading ``system`` message replaces SYSTEM; ``content`` is a string or a list of
# ``{"type": "image"}`` / ``{"type": "text", "text": ...}`` items, each image rendered first as ``<image>\n``, then
# the texts (joined with ``\n``); an empty message renders ``ROLE:``; ``add_generation_prompt`` after a user turn
# appends ``ASSISTANT:``. No ``<s>``: the tokenizer adds it, as for :func:`build_prompt`'s strings.
CHAT_TEMPLATE = (
    "{%- set ns = namespace(system=" + _jinja_text(SYSTEM) + ", start=0) -%}"
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- set ns.start = 1 -%}"
    "{%- if messages[0]['content'] is string -%}{%- set ns.system = messages[0]['content'] -%}"
    "{%- else -%}{%- set ns.system = messages[0]['content'] | selectattr('type', 'equalto', 'text')"
    " | map(attribute='text') | join('\\n') -%}{%- endif -%}"
    "{%- endif -%}"
    "{{- ns.system + " + _jinja_text(SEP) + " -}}"
    "{%- for message in messages[ns.start:] -%}"
    "{%- set user = loop.index0 % 2 == 0 -%}"
    "{%- if (message['role'] == 'user') != user -%}"
    "{{- raise_exception('vicuna_v1: messages must alternate user, assistant (after an optional system message)') -}}"
    "{%- endif -%}"
    "{%- if message['content'] is string -%}{%- set text = message['content'] -%}"
    "{%- else -%}"
    "{%- set images = message['content'] | selectattr('type', 'equalto', 'image') | list -%}"
    "{%- set texts = message['content'] | selectattr('type', 'equalto', 'text') | map(attribute='text') | list -%}"
    "{%- set text = (" + _jinja_text(IMAGE_TOKEN + "\n") + " * (images | length)) + (texts | join('\\n')) -%}"
    "{%- endif -%}"
    "{%- set role = " + _jinja_text(ROLES[0]) + " if user else " + _jinja_text(ROLES[1]) + " -%}"
    "{%- if text -%}{{- role + ': ' + text + (" + _jinja_text(SEP) + " if user else " + _jinja_text(SEP2) + ") -}}"
    "{%- else -%}{{- role + ':' -}}{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt and (messages[ns.start:] | length) % 2 == 1 -%}"
    "{{- " + _jinja_text(ROLES[1] + ":") + " -}}"
    "{%- endif -%}"
)


def chat_messages(turns: Sequence) -> list[dict]:
    """``turns`` (LLaVA dicts or strings, human first) as transformers chat messages ``{"role", "content": [...]}``: a
    leading ``<image>\n`` of a turn becomes an ``{"type": "image"}`` item in front of its text, so
    ``apply_chat_template`` with :data:`CHAT_TEMPLATE` renders exactly :func:`build_prompt` of ``turns``."""
    out = []
    for i, text in enumerate(turn_texts(turns)):
        text = text or ""
        content: list[dict] = []
        if text.startswith(IMAGE_TOKEN + "\n"):
            content.append({"type": "image"})
            text = text[len(IMAGE_TOKEN) + 1:]
        content.append({"type": "text", "text": text})
        out.append({"role": ROLES_HF[i % 2], "content": content})
    return out
