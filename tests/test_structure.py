"""The shape of the codebase, checked from the source with ``ast`` so it stays true (ARCHITECTURE.md draws it).

Layers: ``rs_common`` (shared, no stage) <- ``shards`` (stage 0) <- ``clip_pretrain`` (stage 1) <- ``vlm_finetune``
(stage 2) <- ``launch`` (entry points). ``synthetic`` (demo and test data) sits beside them and no stage imports it.
Every import counts, also the ones inside functions: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ("rs_common", "shards", "clip_pretrain", "vlm_finetune", "launch", "synthetic")
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80

# package -> packages of this project it must not import
FORBIDDEN = {
    "rs_common": {"shards", "clip_pretrain", "vlm_finetune", "launch", "synthetic", "tests", "bench"},
    "shards": {"clip_pretrain", "vlm_finetune", "launch", "synthetic", "tests", "bench"},
    "clip_pretrain": {"shards", "vlm_finetune", "launch", "synthetic", "tests", "bench"},
    "vlm_finetune": {"launch", "synthetic", "tests", "bench"},
    "synthetic": {"launch", "tests", "bench"},
    "launch": {"tests", "bench"},
}
# stage 2 reads datasets through stage 0's public reader API only
VLM_SHARDS_API = {"shards.readers", "shards.record", "shards.build_config"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def product_files() -> list[Path]:
    return sorted(p for pkg in PRODUCT for p in (ROOT / pkg).rglob("*.py") if ".venv" not in p.parts)


def imports_of(path: Path) -> list[tuple[str, list[str], int]]:
    """(imported module, names taken from it, line) for every import in the file, relative ones resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, [], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.append((base, [a.name for a in node.names], node.lineno))
    return found


def project_module(name: str, known: set[str]) -> str | None:
    """The longest project module that ``name`` is or lies in (None for third-party modules)."""
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def test_layers_import_only_downwards():
    problems = []
    for path in product_files():
        here = module_name(path)
        top = here.split(".")[0]
        for target, names, line in imports_of(path):
            other = target.split(".")[0]
            if other in FORBIDDEN.get(top, ()):
                problems.append(f"{path.relative_to(ROOT)}:{line}: {top} imports {target}")
            if top == "vlm_finetune" and other == "shards" and target not in VLM_SHARDS_API:
                problems.append(f"{path.relative_to(ROOT)}:{line}: stage 2 uses {target}, not stage 0's public reader API")
    assert problems == [], "\n".join(problems)


def test_no_private_names_of_other_modules():
    """``_name`` (a module or a name) is imported only from inside the package that owns it."""
    problems = []
    for path in product_files():
        here = module_name(path)
        for target, names, line in imports_of(path):
            parts = target.split(".")
            for i, part in enumerate(parts):
                if part.startswith("_") and not part.startswith("__"):
                    owner = ".".join(parts[:i])
                    if not (here + ".").startswith(owner + "."):
                        problems.append(f"{path.relative_to(ROOT)}:{line}: imports private module {target}")
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if private and target != here:
                problems.append(f"{path.relative_to(ROOT)}:{line}: imports private {private} from {target}")
    assert problems == [], "\n".join(problems)


def test_no_import_cycles():
    files = product_files()
    known = {module_name(p) for p in files}
    graph: dict[str, set[str]] = defaultdict(set)
    for path in files:
        here = module_name(path)
        for target, names, _ in imports_of(path):
            for candidate in [f"{target}.{n}" for n in names] + [target]:
                found = project_module(candidate, known)
                if found and found != here and not here.startswith(found + "."):  # a package's own __init__ aside
                    graph[here].add(found)
                    break
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for node in sorted(known):
        if node not in state:
            visit(node, [node])
    assert cycles == [], "\n".join(cycles)


def test_no_module_over_the_limit():
    long = [f"{p.relative_to(ROOT)}: {n} lines" for p in product_files()
            if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES]
    assert long == [], "\n".join(long)


def test_no_function_over_the_limit():
    long = []
    for path in product_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {n} lines")
    assert long == [], "\n".join(long)
