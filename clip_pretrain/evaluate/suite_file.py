"""The evaluation suite file: a YAML list of datasets, each ``{name, tasks: [...], path}`` with optional ``train`` and
``test`` (class-folder roots of a dataset shipped split), ``images`` (a Karpathy json's image folder), ``split`` (the
Karpathy split retrieval scores, default ``test``) and ``class_names`` (folder name -> prompt name).

``path`` is a class-folder root (``zeroshot``, ``linear_probe``, ``knn``, ``few_shot``), a Karpathy caption json or
a folder holding ``dataset*.json`` (``retrieval``), or a DOTA folder with ``images/`` and ``labelTxt/``
(``counting``); one entry's tasks need one kind of path. Paths may use ``~`` and ``$VARS``; relative ones are taken
from the data root (``--data-root``, default the current folder). A dataset whose files are not there is skipped
with a line saying so (the shipped suites name datasets a user may not have), never an error; a malformed entry is
an error naming the entry before anything is embedded.

Shipped suites (``clip_pretrain/suites/*.yaml``) are chosen by name: ``--suite remoteclip``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from clip_pretrain.evaluate.common import EvalError
from rs_common.errors import first_line

CLASS_TASKS = ("zeroshot", "linear_probe", "knn", "few_shot")
TASKS = (*CLASS_TASKS, "retrieval", "counting")
ENTRY_KEYS = ("name", "tasks", "path", "train", "test", "images", "split", "class_names")
SHIPPED = Path(__file__).resolve().parent.parent / "suites"


@dataclass
class SuiteEntry:
    name: str
    tasks: list[str]
    path: Path | None = None
    train: Path | None = None
    test: Path | None = None
    images: Path | None = None
    split: str = "test"
    class_names: dict[str, str] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        """``classes``, ``captions`` or ``detection``: what the path must be."""
        if self.tasks[0] == "retrieval":
            return "captions"
        return "detection" if self.tasks[0] == "counting" else "classes"

    def missing(self) -> str | None:
        """Why the dataset cannot be run here (a path that does not exist), or None."""
        for key in ("path", "train", "test", "images"):
            p = getattr(self, key)
            if p is not None and not p.exists():
                return f"{key} {p} not found"
        if self.kind == "detection" and self.path is not None and not (self.path / "labelTxt").is_dir():
            return f"{self.path} has no labelTxt/ folder (counting reads a DOTA folder)"
        return None


def shipped_suites() -> list[str]:
    return sorted(p.stem for p in SHIPPED.glob("*.yaml"))


def resolve_suite_path(suite: str) -> Path:
    """A suite file path, or the name of a shipped suite."""
    p = Path(suite).expanduser()
    if p.is_file():
        return p
    shipped = SHIPPED / f"{suite}.yaml"
    if "/" not in suite and shipped.is_file():
        return shipped
    raise EvalError(f"{suite}: no such suite file, nor a shipped suite (shipped: {', '.join(shipped_suites()) or 'none'})")


def resolve_path(value, data_root: Path, where: str) -> Path | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise EvalError(f"{where}: a path must be a non-empty string, got {value!r}")
    p = Path(os.path.expandvars(os.path.expanduser(value.strip())))
    return p if p.is_absolute() else data_root / p


def parse_entry(raw, index: int, data_root: Path, source: Path) -> SuiteEntry:
    where = f"{source}: entry {index + 1}"
    if not isinstance(raw, dict):
        raise EvalError(f"{where}: expected a mapping with name, tasks and path, got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(ENTRY_KEYS))
    if unknown:
        raise EvalError(f"{where}: unknown key(s) {unknown} (known: {', '.join(ENTRY_KEYS)})")
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise EvalError(f"{where}: 'name' must be a non-empty string")
    where = f"{where} ({name})"
    tasks = raw.get("tasks")
    if isinstance(tasks, str):
        tasks = [tasks]
    if not isinstance(tasks, list) or not tasks or any(t not in TASKS for t in tasks):
        raise EvalError(f"{where}: 'tasks' must be a non-empty list of {', '.join(TASKS)}; got {tasks!r}")
    kinds = {"captions" if t == "retrieval" else "detection" if t == "counting" else "classes" for t in tasks}
    if len(kinds) > 1:
        raise EvalError(f"{where}: tasks {tasks} need different kinds of data (class folders, a caption json, a DOTA "
                        "folder); give each kind its own entry")
    class_names = raw.get("class_names") or {}
    if not isinstance(class_names, dict):
        raise EvalError(f"{where}: 'class_names' must map folder names to prompt names")
    split = raw.get("split", "test")
    if not isinstance(split, str):
        raise EvalError(f"{where}: 'split' must be a string such as test, val or all")
    entry = SuiteEntry(name.strip(), list(dict.fromkeys(tasks)), split=split,
                       class_names={str(k): str(v) for k, v in class_names.items()},
                       **{k: resolve_path(raw.get(k), data_root, f"{where}: {k}") for k in ("path", "train", "test", "images")})
    if entry.path is None and not (entry.train and entry.test):
        raise EvalError(f"{where}: needs 'path' (or 'train' and 'test' class-folder roots)")
    if (entry.train or entry.test) and entry.kind != "classes":
        raise EvalError(f"{where}: 'train'/'test' roots are for class-folder tasks only")
    return entry


def load_suite(suite: str | Path, data_root: str | Path = "") -> tuple[Path, list[SuiteEntry]]:
    """(the suite file, its entries); names must be unique."""
    path = resolve_suite_path(str(suite))
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.MarkedYAMLError as exc:  # one line: file:line and the parser's problem
        line = f":{exc.problem_mark.line + 1}" if exc.problem_mark is not None else ""
        raise EvalError(f"{path}{line}: not a readable YAML suite file ({exc.problem or exc.context})") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise EvalError(f"{path}: not a readable YAML suite file ({first_line(exc)})") from None
    if not isinstance(raw, list) or not raw:
        raise EvalError(f"{path}: a suite file is a non-empty YAML list of datasets ({{name, tasks, path}})")
    root = Path(os.path.expandvars(os.path.expanduser(str(data_root)))) if str(data_root) else Path.cwd()
    entries = [parse_entry(item, i, root, path) for i, item in enumerate(raw)]
    seen = set()
    for e in entries:
        if e.name in seen:
            raise EvalError(f"{path}: dataset name {e.name!r} appears twice (names key suite.json)")
        seen.add(e.name)
    return path, entries
