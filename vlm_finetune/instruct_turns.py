"""Multi-turn instruction records: several tasks about one image in one conversation, as GeoChat_Instruct has them.

The builders (:mod:`vlm_finetune.instruct`, :mod:`vlm_finetune.instruct_sources`) make single-turn samples, all the
samples of one image together; :func:`assemble` turns them into the records to write, by the ``turns`` setting:

- ``single``: the samples as they are (one question, one answer each; the default, today's output);
- ``multi``: the samples of an image, in a seeded order, cut into conversations of at most ``max_turns`` rounds
  (``{image id}#multi{k}``, ``task`` ``multi``, the task of each round in ``tasks``); a one-round rest stays the
  single-turn sample it was, so every question is written exactly once;
- ``both``: the single-turn samples and, beside them, the multi-turn conversations of two or more rounds.

The order of the rounds is seeded per image from ``(seed, image id)``: the output does not depend on the order of
the inputs nor on Python's hash seed. :func:`turn_summary` counts what was written (records by number of rounds,
rounds per task) for the summary and the report.
"""

from __future__ import annotations

import random

from rs_common.formats.llava_record import count_turns, make_conversation, qa_pairs

TURN_MODES = ("single", "multi", "both")


def round_tasks(rec: dict) -> list[str]:
    """The task of each question/answer round of a record (``tasks`` of a multi-turn one, else its ``task``)."""
    tasks = rec.get("tasks")
    if isinstance(tasks, list) and len(tasks) == count_turns(rec):
        return [str(t) for t in tasks]
    return [str(rec.get("task", "?"))] * count_turns(rec)


def assemble(samples: list[dict], base_id: str, mode: str = "single", max_turns: int = 3, seed: int = 0) -> list[dict]:
    """The records of one image's single-turn ``samples`` (same ``image``) for ``mode`` (see the module docstring);
    ``base_id`` names the image in the ids of the multi-turn records."""
    if mode not in TURN_MODES:
        raise ValueError(f"turns must be one of {', '.join(TURN_MODES)}, got {mode!r}")
    if mode == "single" or len(samples) < 2 or max_turns < 2:
        return list(samples)
    order = list(samples)
    random.Random(f"{seed}:turns:{base_id}").shuffle(order)
    multi: list[dict] = []
    for k in range(0, len(order), max_turns):
        chunk = order[k:k + max_turns]
        if len(chunk) == 1:
            if mode == "multi":
                multi.append(chunk[0])
            continue
        pairs = [pair for rec in chunk for pair in qa_pairs(rec)]
        multi.append(make_conversation(f"{base_id}#multi{k // max_turns}", chunk[0]["image"], pairs, task="multi",
                                       tasks=[t for rec in chunk for t in round_tasks(rec)]))
    return list(samples) + multi if mode == "both" else multi


def unique_ids(records: list[dict]) -> int:
    """Give a repeated ``id`` (two inputs of the same folder name, say) a ``~2``, ``~3``... suffix, in output order;
    returns how many were renamed."""
    seen: set[str] = set()
    renamed = 0
    for rec in records:
        rid, n = str(rec["id"]), 1
        while rid in seen:
            n += 1
            rid = f"{rec['id']}~{n}"
        if rid != rec["id"]:
            rec["id"] = rid
            renamed += 1
        seen.add(rid)
    return renamed


def turn_summary(records: list[dict]) -> dict:
    """``{"tasks": {task: rounds}, "turns": {"single_turn", "multi_turn", "rounds",
    "records_by_rounds": {n: records}}}``."""
    tasks: dict[str, int] = {}
    by_rounds: dict[int, int] = {}
    for rec in records:
        for task in round_tasks(rec):
            tasks[task] = tasks.get(task, 0) + 1
        n = count_turns(rec)
        by_rounds[n] = by_rounds.get(n, 0) + 1
    single = by_rounds.get(1, 0)
    return {"tasks": tasks, "turns": {"single_turn": single, "multi_turn": len(records) - single,
                                      "rounds": sum(n * c for n, c in by_rounds.items()),
                                      "records_by_rounds": {str(n): by_rounds[n] for n in sorted(by_rounds)}}}
