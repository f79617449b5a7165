"""Published reference numbers for the evaluation suite: RemoteCLIP (arXiv 2306.11029v4) and a later anchor.

Only the numbers that ``../shared/REFERENCE.md`` records are here, nothing from memory:

* zero-shot top-1 (RemoteCLIP Table III) on EuroSAT, RESISC45 and AID for ViT-B-32 and ViT-L-14, and the paper's
  average over its 12 zero-shot sets (62.41 / 71.30; REFERENCE.md does not list which 12 sets);
* retrieval mean recall (RemoteCLIP Table II) on RSITMD, RSICD and UCM for ViT-B-32 and ViT-L-14: IN-DOMAIN,
  RemoteCLIP trained on the RET-3 train splits of exactly these sets;
* GeoRSCLIP (RS5M) ViT-B-32: zero-shot EuroSAT, RESISC45, AID and retrieval RSITMD, RSICD, a different model
  (reference ``"GeoRSCLIP"``), a second anchor only.

Linear-probe and k-NN numbers (and their averages) are not in REFERENCE.md, so none are recorded; few-shot and
counting numbers are not known. :data:`PAPER_NUMBERS` and :data:`PAPER_AVERAGES` are plain data tables: a verified
number is one more row.

Look-ups forgive spelling: dataset names are lower-cased, stripped of everything but letters and digits, then
aliased (``NWPU-RESISC45`` -> ``resisc45``, ``UC-Merced`` -> ``ucm``, ``eurosat-rgb`` -> ``eurosat``); model names
are open_clip's (``ViT-B-32``, ``ViT-L-14``, ``RN50``), ``ViT-B/32`` and a ``-quickgelu`` suffix accepted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

TASKS: tuple[str, ...] = ("zeroshot", "linear_probe", "knn", "few_shot", "retrieval", "counting")
TASK_METRIC: dict[str, str] = {"zeroshot": "top1", "linear_probe": "top1", "knn": "top1", "few_shot": "top1",
                               "retrieval": "mean_recall", "counting": "top1"}
MAIN_REFERENCE = "RemoteCLIP"
REFERENCES: tuple[str, ...] = ("RemoteCLIP", "GeoRSCLIP")

RET3_NOTE = "in-domain: RemoteCLIP trained on the RET-3 train splits (RSICD, RSITMD, UCM)"
ZS_NOTE = "prompt 'a satellite photo of {class name}.', top-1; RemoteCLIP did not train on this set"
GEO_NOTE = "GeoRSCLIP (RS5M): a different model, a later anchor"

# canonical dataset name -> its display name
DATASET_DISPLAY: dict[str, str] = {"eurosat": "EuroSAT", "resisc45": "RESISC45", "aid": "AID", "rsitmd": "RSITMD",
                                   "rsicd": "RSICD", "ucm": "UCM"}
# squashed spelling (lower case, letters and digits only) -> canonical name
DATASET_ALIASES: dict[str, str] = {
    "nwpuresisc45": "resisc45", "resisc": "resisc45", "nwpuresisc": "resisc45",
    "ucmerced": "ucm", "ucmcaptions": "ucm", "ucmercedlanduse": "ucm", "ucmercedcaptions": "ucm",
    "eurosatrgb": "eurosat",
}
MODEL_ALIASES: dict[str, str] = {"vitb32": "ViT-B-32", "vitl14": "ViT-L-14", "rn50": "RN50"}

# (reference, task, canonical dataset, model) -> (value, source, note); metric = TASK_METRIC[task]
PAPER_NUMBERS: dict[tuple[str, str, str, str], tuple[float, str, str]] = {
    ("RemoteCLIP", "zeroshot", "eurosat", "ViT-B-32"): (35.96, "RemoteCLIP Table III", ZS_NOTE),
    ("RemoteCLIP", "zeroshot", "eurosat", "ViT-L-14"): (59.94, "RemoteCLIP Table III", ZS_NOTE),
    ("RemoteCLIP", "zeroshot", "resisc45", "ViT-B-32"): (70.33, "RemoteCLIP Table III", ZS_NOTE),
    ("RemoteCLIP", "zeroshot", "resisc45", "ViT-L-14"): (79.84, "RemoteCLIP Table III", ZS_NOTE),
    ("RemoteCLIP", "zeroshot", "aid", "ViT-B-32"): (91.30, "RemoteCLIP Table III", ZS_NOTE),
    ("RemoteCLIP", "zeroshot", "aid", "ViT-L-14"): (87.90, "RemoteCLIP Table III", ZS_NOTE),
    ("RemoteCLIP", "retrieval", "rsitmd", "ViT-B-32"): (49.38, "RemoteCLIP Table II", RET3_NOTE),
    ("RemoteCLIP", "retrieval", "rsitmd", "ViT-L-14"): (50.52, "RemoteCLIP Table II", RET3_NOTE),
    ("RemoteCLIP", "retrieval", "rsicd", "ViT-B-32"): (35.26, "RemoteCLIP Table II", RET3_NOTE),
    ("RemoteCLIP", "retrieval", "rsicd", "ViT-L-14"): (36.35, "RemoteCLIP Table II", RET3_NOTE),
    ("RemoteCLIP", "retrieval", "ucm", "ViT-B-32"): (56.36, "RemoteCLIP Table II", RET3_NOTE),
    ("RemoteCLIP", "retrieval", "ucm", "ViT-L-14"): (54.68, "RemoteCLIP Table II", RET3_NOTE),
    ("GeoRSCLIP", "zeroshot", "eurosat", "ViT-B-32"): (61.40, "GeoRSCLIP (RS5M)", GEO_NOTE),
    ("GeoRSCLIP", "zeroshot", "resisc45", "ViT-B-32"): (72.74, "GeoRSCLIP (RS5M)", GEO_NOTE),
    ("GeoRSCLIP", "zeroshot", "aid", "ViT-B-32"): (74.42, "GeoRSCLIP (RS5M)", GEO_NOTE),
    ("GeoRSCLIP", "retrieval", "rsitmd", "ViT-B-32"): (35.33, "GeoRSCLIP (RS5M)", GEO_NOTE),
    ("GeoRSCLIP", "retrieval", "rsicd", "ViT-B-32"): (26.06, "GeoRSCLIP (RS5M)", GEO_NOTE),
}
# (reference, task, model) -> (value, number of datasets averaged, source, note)
PAPER_AVERAGES: dict[tuple[str, str, str], tuple[float, int, str, str]] = {
    ("RemoteCLIP", "zeroshot", "ViT-B-32"): (62.41, 12, "RemoteCLIP Table III",
                                             "average over the paper's 12 zero-shot sets (not listed in REFERENCE.md)"),
    ("RemoteCLIP", "zeroshot", "ViT-L-14"): (71.30, 12, "RemoteCLIP Table III",
                                             "average over the paper's 12 zero-shot sets (not listed in REFERENCE.md)"),
}
# what REFERENCE.md does not give, per task, for a report to say so
NOT_RECORDED: dict[str, str] = {
    "linear_probe": "not recorded in REFERENCE.md",
    "knn": "not recorded in REFERENCE.md",
    "few_shot": "none known",
    "counting": "none known",
}


@dataclass(frozen=True)
class PaperNumber:
    """One published number: ``value`` in ``metric`` units (percent), where it is from, and what to know about it.
    ``n_datasets`` is set for an average (how many sets the paper averages over)."""

    value: float
    metric: str
    source: str
    note: str = ""
    reference: str = MAIN_REFERENCE
    model: str = ""
    dataset: str = ""
    n_datasets: int | None = None


def squash(name: str) -> str:
    """Lower case, letters and digits only."""
    return re.sub(r"[^0-9a-z]", "", str(name).lower())


def canonical_dataset(name: str) -> str:
    """The table's name for a dataset (``"NWPU-RESISC45"`` -> ``"resisc45"``); an unknown name squashed."""
    key = squash(name)
    return DATASET_ALIASES.get(key, key)


def canonical_model(name: str) -> str:
    """open_clip's spelling of a model the tables know (``"ViT-B/32"`` -> ``"ViT-B-32"``); others unchanged."""
    key = squash(name)
    key = key[: -len("quickgelu")] if key.endswith("quickgelu") else key
    return MODEL_ALIASES.get(key, str(name))


def check_task(task: str) -> str:
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known: {', '.join(TASKS)}")
    return task


def paper_number(task: str, dataset: str, model: str, reference: str = MAIN_REFERENCE) -> PaperNumber | None:
    """The published ``task`` number of ``reference`` (RemoteCLIP by default) for ``dataset`` and ``model``, or None
    where REFERENCE.md has none. Raises ValueError for an unknown task."""
    check_task(task)
    ds, mdl = canonical_dataset(dataset), canonical_model(model)
    row = PAPER_NUMBERS.get((reference, task, ds, mdl))
    if row is None:
        return None
    value, source, note = row
    return PaperNumber(value=value, metric=TASK_METRIC[task], source=source, note=note, reference=reference,
                       model=mdl, dataset=DATASET_DISPLAY.get(ds, ds))


def paper_average(task: str, model: str, reference: str = MAIN_REFERENCE) -> PaperNumber | None:
    """The published average of ``task`` over the paper's sets for ``model`` (``n_datasets`` = how many), or None."""
    check_task(task)
    mdl = canonical_model(model)
    row = PAPER_AVERAGES.get((reference, task, mdl))
    if row is None:
        return None
    value, n, source, note = row
    return PaperNumber(value=value, metric=TASK_METRIC[task], source=source, note=note, reference=reference,
                       model=mdl, n_datasets=n)


def models_with_numbers(reference: str = MAIN_REFERENCE) -> list[str]:
    """The models ``reference`` has any number for, sorted."""
    found = {k[3] for k in PAPER_NUMBERS if k[0] == reference} | {k[2] for k in PAPER_AVERAGES if k[0] == reference}
    return sorted(found)


def has_paper_numbers(model: str, reference: str = MAIN_REFERENCE) -> bool:
    return canonical_model(model) in models_with_numbers(reference)


def tasks_with_numbers(model: str, reference: str = MAIN_REFERENCE) -> list[str]:
    """The tasks (in :data:`TASKS` order) with a number or an average for ``model``."""
    mdl = canonical_model(model)
    have = {k[1] for k in PAPER_NUMBERS if k[0] == reference and k[3] == mdl}
    have |= {k[1] for k in PAPER_AVERAGES if k[0] == reference and k[2] == mdl}
    return [t for t in TASKS if t in have]
