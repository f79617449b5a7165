"""The hostile-input corpus: its case type, the runner, and the README table.

Every :class:`Case` makes its own files in a fresh workspace (``make`` returns the tool's argv), runs the tool's
``main(argv)`` in this process under a deadline, and is checked for what every case shares:

* the exit status is ``rc``;
* when ``rc`` is not 0, the last line on stderr is the error and contains ``names`` (the file at fault);
* no traceback, whatever the status (an exception escaping ``main`` counts as one);
* every file that existed before the run is byte-identical afterwards and new files appear only under
  ``output`` (None: the tool may write nothing at all);
* the run ends within ``timeout`` seconds;
* ``check`` (optional) holds: counts that balance, what was written, what was skipped and why.

``python -m tests.hostile.corpus`` prints the README's "What happens to bad input" table from the same cases.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Case:
    tool: str  # the launch script, e.g. "build_shards.py"
    input: str  # the bad input, for the README table
    outcome: str  # what the tool does with it, for the README table
    make: Callable[[Path], list[str]]  # writes the case's files under the workspace, returns argv
    rc: int = 2
    names: Callable[[Path], str] | None = None  # the text the error line must contain (the file at fault)
    output: Callable[[Path], Path | None] = lambda ws: ws / "out"
    check: Callable[[Path], None] | None = None  # raises AssertionError when the outcome is wrong
    timeout: float = 120.0
    before: Callable[[Path], object] | None = None  # runs after make and the snapshot, e.g. to hold a lock; returns a context manager
    run: Callable[[Path, list[str]], tuple[int | None, str]] | None = None  # a process-level runner instead of main(argv)

    @property
    def slug(self) -> str:
        return "".join(c if c.isalnum() else "-" for c in f"{self.tool[:-3]}-{self.input}".lower())[:60]


def tool_main(tool: str) -> Callable[[list[str]], int]:
    """The ``main(argv)`` of a launch script."""
    import importlib

    module = importlib.import_module(f"launch.{tool[:-3]}")
    return module.main


class Deadline(Exception):
    pass


@contextlib.contextmanager
def deadline(seconds: float):
    """Raise :class:`Deadline` in this (the main) thread after ``seconds``: a hang becomes a failure, not a stuck run."""

    def alarm(signum, frame):
        raise Deadline(f"still running after {seconds:.0f} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def snapshot(root: Path) -> dict[str, str]:
    """sha1 of every file under ``root`` (links listed, not followed)."""
    out: dict[str, str] = {}
    for dirpath, dirnames, files in os.walk(root):
        for name in files + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            out[rel] = "link:" + os.readlink(path) if path.is_symlink() else hashlib.sha1(path.read_bytes()).hexdigest()
    return out


def changed_outside(before: dict[str, str], after: dict[str, str], ws: Path, output: Path | None) -> list[str]:
    """Files changed, removed or added anywhere but under ``output``."""
    allowed = None if output is None else str(output.relative_to(ws))

    def inside(rel: str) -> bool:
        return allowed is not None and (rel == allowed or rel.startswith(allowed + os.sep))

    problems = [f"changed: {r}" for r in before if not inside(r) and after.get(r) != before[r]]
    problems += [f"added: {r}" for r in after if r not in before and not inside(r)]
    return problems


@dataclass
class Outcome:
    case: Case
    rc: int | None
    stderr: str
    problems: list[str] = field(default_factory=list)


def invoke(tool: str, argv: list[str]) -> tuple[int | None, str, str | None]:
    """``(exit status, stderr, traceback or None)`` of ``tool``'s main in this process."""
    import traceback

    err = io.StringIO()
    rc: int | None = None
    crash = None
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            rc = tool_main(tool)(argv)
        except SystemExit as exc:  # argparse errors and sys.exit
            rc = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except Deadline:
            raise
        except BaseException:  # noqa: BLE001 - anything escaping main is what the corpus exists to catch
            crash = traceback.format_exc()
    return rc, err.getvalue(), crash


def run_case(case: Case, ws: Path) -> Outcome:
    ws.mkdir(parents=True)
    argv = case.make(ws)
    before = snapshot(ws)
    hold = case.before(ws) if case.before is not None else contextlib.nullcontext()
    problems: list[str] = []
    try:
        with hold, deadline(case.timeout):
            if case.run is not None:
                (rc, stderr), crash = case.run(ws, argv), None
            else:
                rc, stderr, crash = invoke(case.tool, argv)
    except Deadline as exc:
        return Outcome(case, None, "", [f"hang: {exc}"])
    if crash is not None:
        problems.append("traceback:\n" + crash[-3000:])
    if "Traceback (most recent call last)" in stderr:
        problems.append("traceback on stderr")
    if rc != case.rc:
        problems.append(f"exit status {rc}, expected {case.rc}; stderr tail: {stderr[-800:]!r}")
    if case.rc != 0 and rc == case.rc:
        lines = [line for line in stderr.strip().splitlines() if line.strip()]
        last = lines[-1] if lines else ""
        if "error" not in last.lower():
            problems.append(f"the last stderr line is not the error: {last!r}")
        if case.names is not None and case.names(ws) not in last:
            problems.append(f"the error does not name {case.names(ws)!r}: {last!r}")
    problems += changed_outside(before, snapshot(ws), ws, case.output(ws))
    if case.check is not None and not problems:
        try:
            case.check(ws)
        except AssertionError as exc:
            problems.append(f"check failed: {exc}")
    return Outcome(case, rc, stderr, problems)


def run_corpus(cases: list[Case], tmp: Path) -> list[str]:
    """Run ``cases``; one line (or block) per problem, ``[]`` when every case holds."""
    failures = []
    for case in cases:
        outcome = run_case(case, tmp / case.slug)
        failures += [f"[{case.tool}] {case.input}: {p}" for p in outcome.problems]
    return failures


# ---------------------------------------------------------------- all cases and the README table


def all_cases() -> list[Case]:
    from tests.hostile import build_cases, eval_cases, train_cases, vlm_cases

    return [*build_cases.CASES, *train_cases.CASES, *eval_cases.CASES, *vlm_cases.CASES]


def cases_of(tool: str) -> list[Case]:
    return [c for c in all_cases() if c.tool == tool]


def markdown_table(cases: list[Case]) -> str:
    lines = ["| tool | input | what the tool does |", "|---|---|---|"]
    lines += [f"| `{c.tool}` | {c.input} | {c.outcome} |" for c in cases]
    return "\n".join(lines) + "\n"


TABLE_START = "<!-- hostile-input table: generated by `python -m tests.hostile.corpus`; do not edit by hand -->"
TABLE_END = "<!-- end of hostile-input table -->"


if __name__ == "__main__":
    sys.stdout.write(markdown_table(all_cases()))
