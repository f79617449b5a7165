"""Cases that need real processes: a signal to a running trainer, torchrun killed with -9 under its worker.

Each ``run_*`` function takes the case's workspace and the trainer's argv and returns ``(exit status, stderr)`` of
the training process, like the in-process runner does for ``main(argv)``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# torchrun's stand-in: starts the worker in a session of its own, as torch.distributed.elastic does
LAUNCHER = r"""
import json, os, subprocess, sys, time
cmd, err = json.loads(sys.argv[1]), sys.argv[2]
env = dict(os.environ, TORCHELASTIC_RUN_ID="test")
with open(err, "w") as fh:
    worker = subprocess.Popen(cmd, start_new_session=True, env=env, stdout=subprocess.DEVNULL, stderr=fh)
print(worker.pid, flush=True)
time.sleep(150)
"""

# kills the launcher with -9 once the worker has logged two steps, then waits for the orphaned worker (reaped here:
# PR_SET_CHILD_SUBREAPER makes this process its new parent) and prints its exit status
HARNESS = r"""
import ctypes, json, os, signal, subprocess, sys, time
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)
launcher_code, cmd, err, log = sys.argv[1:5]
launcher = subprocess.Popen([sys.executable, "-c", launcher_code, cmd, err], stdout=subprocess.PIPE, text=True)
worker = int(launcher.stdout.readline())
deadline = time.time() + 90
while time.time() < deadline and not (os.path.exists(log) and open(log).read().count("\n") >= 2):
    time.sleep(0.2)
os.kill(launcher.pid, signal.SIGKILL)
launcher.wait()
start = time.time()
while time.time() - start < 60:
    pid, status = os.waitpid(worker, os.WNOHANG)
    if pid:
        print(json.dumps({"rc": os.waitstatus_to_exitcode(status), "seconds": round(time.time() - start, 1)}))
        sys.exit(0)
    time.sleep(0.2)
os.kill(worker, signal.SIGKILL)
os.waitpid(worker, 0)
print(json.dumps({"rc": None}))
"""


def trainer_cmd(argv: list[str]) -> list[str]:
    return [sys.executable, str(ROOT / "launch" / "pretrain_clip.py"), *argv]


def wait_for_rows(log: Path, rows: int, seconds: float = 120) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline and not (log.exists() and log.read_text().count("\n") >= rows):
        time.sleep(0.2)


def run_torchrun_killed(ws: Path, argv: list[str], output: Path) -> tuple[int | None, str]:
    """The trainer under a torchrun stand-in that is killed with -9 after two logged steps."""
    err = ws / "worker.err"
    run = subprocess.run([sys.executable, "-c", HARNESS, LAUNCHER, json.dumps(trainer_cmd(argv)), str(err),
                          str(output / "log.jsonl")], capture_output=True, text=True, timeout=200, cwd=ROOT)
    result = json.loads(run.stdout.strip().splitlines()[-1])
    stderr = err.read_text() if err.exists() else run.stderr
    err.unlink(missing_ok=True)
    return result["rc"], stderr


def run_sigterm(ws: Path, argv: list[str], output: Path) -> tuple[int | None, str]:
    """The trainer sent SIGTERM (what a scheduler sends before the kill) after two logged steps."""
    proc = subprocess.Popen(trainer_cmd(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    wait_for_rows(output / "log.jsonl", 2)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    return proc.returncode, stderr.decode()


def is_linux() -> bool:
    return sys.platform.startswith("linux") and hasattr(os, "waitstatus_to_exitcode")
