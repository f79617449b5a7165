"""Conversations with GeoChat: the processor's chat template renders our vicuna_v1 prompt exactly, and
launch/geochat_infer.py --chat keeps a conversation going (tiny GeoChat on CPU)."""

from __future__ import annotations

import io
import json
import shutil

import pytest
from PIL import Image

from rs_common.formats.conversation import CHAT_TEMPLATE, IMAGE_TOKEN, SYSTEM, build_prompt, chat_messages
from rs_common.formats.llava_record import validate_record

WORDS = ["what", "is", "in", "the", "image", "how", "many", "planes", "are", "there", "[refer]", "plane", "left",
         "a", "field", "two", "ships", "harbour"]
QUESTIONS = ["What is in the image?", "How many planes are there?", "[refer] the plane on the left"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A rs-tiny tower (32 px, patch 8: 16 image tokens) + a tiny random LLaMA, assembled and saved."""
    import clip_pretrain  # noqa: F401 - registers rs-tiny
    from synthetic.tiny_llm import word_vocab, write_tiny_llm
    from vlm_finetune.export import export_vision_tower
    from vlm_finetune.geochat import assemble_geochat

    root = tmp_path_factory.mktemp("chat")
    tower = export_vision_tower(None, "rs-tiny", 32, root / "tower")
    llm = write_tiny_llm(root / "llm", word_vocab([SYSTEM, *WORDS]), hidden=64, layers=2, seed=0)
    assemble_geochat(tower, llm).save(root / "model")
    image = root / "scene.png"
    Image.new("RGB", (64, 40), (90, 120, 90)).save(image)
    return {"root": root, "model": root / "model", "image": image}


@pytest.fixture(scope="module")
def processor(tiny):
    from vlm_finetune.geochat import load_geochat

    return load_geochat(tiny["model"]).processor


# ---------------------------------------------------------------------------------------------------------------
# the chat template
# ---------------------------------------------------------------------------------------------------------------


def hf_messages(n_user: int, answered: bool) -> list[dict]:
    """A conversation written the transformers way: the image as a content item of the first user message."""
    msgs = []
    for i in range(n_user):
        content = ([{"type": "image"}] if i == 0 else []) + [{"type": "text", "text": QUESTIONS[i]}]
        msgs.append({"role": "user", "content": content})
        if answered or i < n_user - 1:
            msgs.append({"role": "assistant", "content": [{"type": "text", "text": f"answer {i} ."}]})
    return msgs


def our_turns(n_user: int, answered: bool) -> list[str]:
    turns = []
    for i in range(n_user):
        turns.append(f"{IMAGE_TOKEN}\n{QUESTIONS[i]}" if i == 0 else QUESTIONS[i])
        if answered or i < n_user - 1:
            turns.append(f"answer {i} .")
    return turns


@pytest.mark.parametrize("n_user", [1, 3])
@pytest.mark.parametrize("answered", [False, True])
@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_chat_template_renders_our_vicuna_v1_prompt(processor, n_user, answered, add_generation_prompt):
    assert processor.chat_template == CHAT_TEMPLATE  # saved with the model (chat_template.jinja) and loaded back
    ours = build_prompt(our_turns(n_user, answered), add_generation_prompt=add_generation_prompt)
    rendered = processor.apply_chat_template(hf_messages(n_user, answered), add_generation_prompt=add_generation_prompt,
                                             tokenize=False)
    assert rendered == ours
    assert processor.apply_chat_template(chat_messages(our_turns(n_user, answered)),
                                         add_generation_prompt=add_generation_prompt, tokenize=False) == ours
    if n_user == 3 and not answered:
        assert ours.startswith(SYSTEM + " USER: <image>\nWhat is in the image? ASSISTANT: answer 0 .</s>USER: How")
        assert ours.endswith("USER: [refer] the plane on the left " + ("ASSISTANT:" if add_generation_prompt else ""))


def test_chat_template_system_message_and_string_content(processor):
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "<image>\nhi"},
            {"role": "assistant", "content": "yes"}, {"role": "user", "content": "and?"}]
    assert processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False) == \
        build_prompt(["<image>\nhi", "yes", "and?"], system="Be brief.", add_generation_prompt=True)
    with pytest.raises(Exception, match="alternate"):
        processor.apply_chat_template([{"role": "assistant", "content": "x"}], tokenize=False)


def test_model_saved_without_the_template_gets_it_on_load(tiny, tmp_path):
    from vlm_finetune.geochat import load_geochat

    old = tmp_path / "old"
    shutil.copytree(tiny["model"], old)
    (old / "chat_template.jinja").unlink()
    config = json.loads((old / "config.json").read_text())
    assert config["image_aspect_ratio"] == "pad"  # the preprocessing is recorded with the model
    del config["image_aspect_ratio"]
    (old / "config.json").write_text(json.dumps(config))
    chat = load_geochat(old)
    assert chat.processor.chat_template == CHAT_TEMPLATE
    assert chat.processor.apply_chat_template(hf_messages(1, False), add_generation_prompt=True, tokenize=False) == \
        build_prompt(our_turns(1, False), add_generation_prompt=True)
    from vlm_finetune.image_prep import model_image_aspect_ratio

    assert model_image_aspect_ratio(chat.model) == "pad"  # a model saved before the key: GeoChat's pad


# ---------------------------------------------------------------------------------------------------------------
# geochat_infer.py --chat
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture
def prompts(monkeypatch):
    """Every prompt the chat renders, in order (the real generation still runs)."""
    from vlm_finetune import infer

    seen: list[str] = []
    real = infer.generate_answer

    def recording(model, processor, image, prompt, *args, **kwargs):
        seen.append(prompt)
        return real(model, processor, image, prompt, *args, **kwargs)

    monkeypatch.setattr(infer, "generate_answer", recording)
    return seen


def run_cli(tiny, capsys, *args) -> tuple[int, list[str], dict, str]:
    from launch import geochat_infer

    rc = geochat_infer.main(["--model", str(tiny["model"]), "--image", str(tiny["image"]), "--max-new-tokens", "4",
                             *map(str, args)])
    out, err = capsys.readouterr()
    lines = out.strip().splitlines()
    return rc, lines[:-1], json.loads(lines[-1]) if lines else {}, err


def test_chat_three_turns_keeps_the_history(tiny, capsys, prompts, tmp_path):
    transcript = tmp_path / "chat.json"
    args = [a for q in QUESTIONS for a in ("--question", q)]
    rc, printed, result, _ = run_cli(tiny, capsys, "--chat", *args, "--transcript", transcript)
    assert rc == 0
    answers = [t["answer"] for t in result["turns"]]
    assert [t["question"] for t in result["turns"]] == QUESTIONS and printed == answers
    assert len(prompts) == 3
    assert prompts[0] == build_prompt([f"{IMAGE_TOKEN}\n{QUESTIONS[0]}"], add_generation_prompt=True)
    assert answers[0], "the tiny model gave an empty first answer; the history check needs one"
    assert f"ASSISTANT: {answers[0]}</s>USER: {QUESTIONS[1]} ASSISTANT:" in prompts[1]
    assert prompts[2] == build_prompt([f"{IMAGE_TOKEN}\n{QUESTIONS[0]}", answers[0], QUESTIONS[1], answers[1],
                                       QUESTIONS[2]], add_generation_prompt=True)
    assert all(p.count(IMAGE_TOKEN) == 1 for p in prompts)  # the image only in the first user turn
    saved = json.loads(transcript.read_text())
    assert result["transcript"] == str(transcript) and isinstance(saved, list) and len(saved) == 1
    validate_record(saved[0], 0)
    conv = saved[0]["conversations"]
    assert [t["from"] for t in conv] == ["human", "gpt"] * 3
    assert conv[0]["value"] == f"{IMAGE_TOKEN}\n{QUESTIONS[0]}" and [t["value"] for t in conv[1::2]] == answers
    assert saved[0]["image"] == str(tiny["image"])


def test_chat_questions_file_and_stdin(tiny, capsys, prompts, tmp_path, monkeypatch):
    questions = tmp_path / "questions.txt"
    questions.write_text(f"{QUESTIONS[0]}\n\n{QUESTIONS[1]}\n")
    rc, printed, result, _ = run_cli(tiny, capsys, "--questions", questions)  # implies --chat; blank lines skipped
    assert rc == 0 and [t["question"] for t in result["turns"]] == QUESTIONS[:2] and len(printed) == 2
    assert result["transcript"] is None and result["drawn"] is None
    prompts.clear()
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{QUESTIONS[0]}\n{QUESTIONS[1]}\n\n{QUESTIONS[2]}\n"))
    rc, printed, result, _ = run_cli(tiny, capsys, "--chat")  # an empty line ends the session
    assert rc == 0 and [t["question"] for t in result["turns"]] == QUESTIONS[:2] and len(prompts) == 2
    monkeypatch.setattr("sys.stdin", io.StringIO(QUESTIONS[2]))  # EOF ends it too
    rc, printed, result, _ = run_cli(tiny, capsys, "--chat", "--prompt", QUESTIONS[0])
    assert rc == 0 and [t["question"] for t in result["turns"]] == [QUESTIONS[0], QUESTIONS[2]]


def test_chat_bad_files_fail_before_the_model_loads(tiny, capsys, tmp_path, monkeypatch):
    from vlm_finetune import geochat

    monkeypatch.setattr(geochat, "load_geochat", lambda *a, **k: pytest.fail("model loaded before the checks"))
    rc, _, _, err = run_cli(tiny, capsys, "--questions", tmp_path / "missing.txt")
    assert rc == 2 and err.startswith("error: --questions")
    rc, _, _, err = run_cli(tiny, capsys, "--question", "hi", "--transcript", tmp_path)
    assert rc == 2 and err.startswith("error: --transcript") and "is a folder" in err
    rc, _, _, err = run_cli(tiny, capsys, "--question", "hi", "--transcript", tmp_path / "nope" / "chat.json")
    assert rc == 2 and "does not exist" in err
    rc, _, _, err = run_cli(tiny, capsys, "--question", "hi", "--transcript", tmp_path / "chat.txt")
    assert rc == 2 and "extension" in err
