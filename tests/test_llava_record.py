"""rs_common.formats.llava_record: the one owner of the LLaVA record (GeoChat_Instruct json / jsonl)."""

from __future__ import annotations

import json

import pytest

from rs_common.formats.conversation import IMAGE_TOKEN
from rs_common.formats.llava_record import (
    RecordError,
    json_lines,
    load_json_records,
    make_record,
    read_records,
    strip_image_token,
    validate_record,
)


class OwnError(ValueError):
    pass


def test_make_record_is_a_valid_single_turn_record_with_extra_fields_kept():
    rec = make_record("a/b.png#count", "a/b.png", "How many planes?", "3", task="count")
    assert list(rec) == ["id", "image", "task", "conversations"]
    assert rec["conversations"][0] == {"from": "human", "value": f"{IMAGE_TOKEN}\nHow many planes?"}
    validate_record(rec, 0)
    assert strip_image_token(rec["conversations"][0]["value"]) == "How many planes?"


def test_errors_are_the_callers_type_and_name_the_file_and_record(tmp_path):
    bad = make_record("r1", "x.png", "q", "a")
    bad["conversations"][0]["value"] = "no image here"
    path = tmp_path / "data.json"
    path.write_text(json.dumps([make_record("r0", "x.png", "q", "a"), bad]))
    with pytest.raises(OwnError, match=r"data.json: record 1 \(id 'r1'\): the first human turn has no '<image>'"):
        read_records(path, OwnError)
    with pytest.raises(RecordError, match="is a folder"):
        load_json_records(tmp_path)
    with pytest.raises(OwnError, match="not found"):
        load_json_records(tmp_path / "missing.jsonl", OwnError)


def test_jsonl_records_and_lines():
    assert [v for _, v in json_lines('{"a": 1}\n\n[2]\n', "p.jsonl", OwnError)] == [{"a": 1}, [2]]
    with pytest.raises(OwnError, match=r"p.jsonl:2: not valid JSON"):
        json_lines('{"a": 1}\n{oops\n', "p.jsonl", OwnError)


def test_jsonl_file_reads_like_a_json_list(tmp_path):
    recs = [make_record(f"r{i}", f"{i}.png", "q", "a") for i in range(3)]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    assert read_records(tmp_path / "d.jsonl") == recs
