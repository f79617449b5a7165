"""One entry-point style: every ``launch/*.py`` is a few lines that parse a typed config and call one function, each
tool is a console script in pyproject.toml, and the demo calls Python functions, not command-line strings."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = sorted(p.stem for p in (ROOT / "launch").glob("*.py") if p.stem != "__init__")
TOOLS = [s for s in SCRIPTS if s != "demo"]
MAX_CODE_LINES = 40  # per launch script, docstring, comments and blank lines aside (demo.py excepted)
MAX_MAIN_STATEMENTS = 3


def console_scripts() -> dict[str, str]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def code_lines(path: Path) -> int:
    tree = ast.parse(path.read_text())
    doc = range(0)
    if tree.body and isinstance(tree.body[0], ast.Expr) and isinstance(tree.body[0].value, ast.Constant):
        doc = range(tree.body[0].lineno, tree.body[0].end_lineno + 1)
    return sum(1 for i, line in enumerate(path.read_text().splitlines(), start=1)
               if i not in doc and line.strip() and not line.strip().startswith("#"))


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_exits_zero(script, capsys):
    main = importlib.import_module(f"launch.{script}").main
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0 and "usage:" in capsys.readouterr().out


@pytest.mark.parametrize("script", ["build_shards", "demo"])
def test_runs_as_a_plain_script_from_a_checkout(script):
    done = subprocess.run([sys.executable, str(ROOT / "launch" / f"{script}.py"), "--help"], capture_output=True,
                          text=True, cwd=ROOT / "launch", timeout=300)
    assert done.returncode == 0 and "usage:" in done.stdout, done.stderr[-2000:]


def test_every_console_script_points_at_an_importable_callable():
    scripts = console_scripts()
    assert scripts, "no [project.scripts] in pyproject.toml"
    for name, target in scripts.items():
        module, _, attr = target.partition(":")
        assert attr, f"{name} = {target!r}: no ':function'"
        assert module.split(".")[0] in ("launch", "shards", "clip_pretrain", "vlm_finetune", "rs_common", "synthetic")
        obj = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
        assert callable(obj), f"{name} = {target!r} is not callable"


def test_every_launch_script_is_a_console_script():
    targets = set(console_scripts().values())
    missing = [s for s in SCRIPTS if f"launch.{s}:main" not in targets]
    assert missing == [], f"launch scripts without a console script in pyproject.toml: {missing}"


@pytest.mark.parametrize("script", TOOLS)
def test_launch_scripts_stay_short(script):
    path = ROOT / "launch" / f"{script}.py"
    n = code_lines(path)
    assert n <= MAX_CODE_LINES, f"launch/{script}.py has {n} lines of code; the work belongs in a stage package"
    tree = ast.parse(path.read_text())
    mains = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "main"]
    imported = any(isinstance(node, ast.ImportFrom) and any(a.name == "main" and a.asname in (None, "main") for a in node.names)
                   for node in tree.body)
    assert mains or imported, f"launch/{script}.py has no main()"
    for main in mains:
        assert len(main.body) <= MAX_MAIN_STATEMENTS, f"launch/{script}.py main() does more than parse and call"


def test_demo_calls_functions_not_command_lines():
    tree = ast.parse((ROOT / "launch" / "demo.py").read_text())
    flag_lists = [node.lineno for node in ast.walk(tree) if isinstance(node, (ast.List, ast.Tuple))
                  and any(isinstance(e, ast.Constant) and isinstance(e.value, str) and e.value.startswith("--")
                          for e in node.elts)]
    assert flag_lists == [], f"launch/demo.py builds command-line lists at lines {flag_lists}"
    mains = [f"{node.module}.main (line {node.lineno})" for node in ast.walk(tree)
             if isinstance(node, ast.ImportFrom) and any(a.name == "main" for a in node.names)]
    assert mains == [], f"launch/demo.py drives tools through their main(): {mains}"
