"""The hostile-input corpus (tests/hostile), one test per tool, and the README table generated from it."""

from __future__ import annotations

from pathlib import Path

from tests.hostile.corpus import TABLE_END, TABLE_START, all_cases, cases_of, markdown_table, run_corpus

ROOT = Path(__file__).resolve().parent.parent


def corpus(tool: str, tmp_path: Path) -> None:
    cases = cases_of(tool)
    assert cases, f"no corpus cases for {tool}"
    failures = run_corpus(cases, tmp_path)
    assert not failures, f"{len(failures)} problem(s) in {len(cases)} cases:\n" + "\n".join(failures)


def test_build_shards_corpus(tmp_path):
    corpus("build_shards.py", tmp_path)


def test_readme_table_is_generated_from_the_corpus():
    readme = (ROOT / "README.md").read_text()
    assert TABLE_START in readme and TABLE_END in readme, "README lacks the hostile-input table markers"
    current = readme.split(TABLE_START, 1)[1].split(TABLE_END, 1)[0].strip()
    assert current == markdown_table(all_cases()).strip(), "README table is stale: run `python -m tests.hostile.corpus`"


def test_pretrain_clip_corpus(tmp_path):
    corpus("pretrain_clip.py", tmp_path)


def test_eval_retrieval_corpus(tmp_path):
    corpus("eval_retrieval.py", tmp_path)


def test_eval_zeroshot_corpus(tmp_path):
    corpus("eval_zeroshot.py", tmp_path)


def test_eval_suite_corpus(tmp_path):
    corpus("eval_suite.py", tmp_path)


def test_export_vision_tower_corpus(tmp_path):
    corpus("export_vision_tower.py", tmp_path)


def test_finetune_geochat_corpus(tmp_path):
    corpus("finetune_geochat.py", tmp_path)


def test_build_instruct_corpus(tmp_path):
    corpus("build_instruct.py", tmp_path)


def test_convert_geochat_corpus(tmp_path):
    corpus("convert_geochat.py", tmp_path)


def test_geochat_infer_corpus(tmp_path):
    corpus("geochat_infer.py", tmp_path)


def test_eval_geochat_corpus(tmp_path):
    corpus("eval_geochat.py", tmp_path)


def test_every_tool_has_a_corpus_test():
    tested = {name[len("test_"):-len("_corpus")] + ".py" for name in globals() if name.endswith("_corpus")}
    assert {c.tool for c in all_cases()} <= tested
