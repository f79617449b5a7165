"""Guards every long-running tool uses on the folders it writes: one live run per output folder, outputs kept
apart from inputs, and workers that stop when their launcher dies.

* :class:`RunLock` - ``OUTPUT/.lock`` held with ``fcntl.flock`` for the life of a run. The kernel drops the lock
  when the process dies (``kill -9`` included), so a stale file never blocks the next run, and a second run on
  a folder that a live run holds is refused with the holder's pid, host and command.
* :func:`check_apart` - an output folder equal to, inside, or holding one of the input folders is refused
  before anything is written (an overwrite there would delete the dataset; a build inside a scene-folder
  input would be read back as a new class).
* :func:`stop_with_parent` - torchrun starts each worker in a session of its own
  (``torch.distributed.elastic`` passes ``start_new_session=True``), so killing torchrun's process group, or
  ``kill -9`` of torchrun, leaves the worker training and writing. The kernel is asked to send SIGTERM when
  the parent dies, which the training loop handles like any other SIGTERM (checkpoint, exit).
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path

LOCK_NAME = ".lock"


class OutputBusyError(RuntimeError):
    """Another live run holds the output folder."""


class OverlapError(ValueError):
    """An output folder that overlaps an input folder."""


def real(path: str | Path) -> Path:
    """``path`` with symlinks resolved (so two spellings of one folder compare equal); need not exist."""
    return Path(os.path.realpath(Path(path).expanduser()))


def is_within(path: str | Path, root: str | Path) -> bool:
    """True when ``path`` is ``root`` or lies under it, after resolving symlinks in both."""
    p, r = real(path), real(root)
    return p == r or r in p.parents


def check_apart(output: str | Path, inputs: list[tuple[str, str | Path]]) -> None:
    """Refuse an ``output`` that is, lies inside, or contains one of ``inputs`` (``(flag, path)`` pairs)."""
    for flag, path in inputs:
        if is_within(output, path):
            where = "is" if real(output) == real(path) else "lies inside"
            raise OverlapError(f"--output {output} {where} the input {flag} {path}: choose an output folder outside "
                               "every input, so nothing there is overwritten or read back as data")
        if is_within(path, output):
            raise OverlapError(f"--output {output} contains the input {flag} {path}: choose an output folder that "
                               "holds no input")


class RunLock:
    """Exclusive hold on a folder for one run (see the module docstring). Use as a context manager or call
    :meth:`acquire` / :meth:`release`. The lock file stays behind after release (removing it would race with
    a run that opened it a moment earlier); only a live holder blocks."""

    def __init__(self, folder: str | Path, name: str = LOCK_NAME, what: str = "run"):
        self.folder = Path(folder)
        self.path = self.folder / name
        self.what = what
        self._fh = None

    def acquire(self) -> "RunLock":
        import fcntl

        self.folder.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            holder = _holder_text(fh.read())
            fh.close()
            raise OutputBusyError(f"{self.folder} is in use by another {self.what} ({holder}); wait for it to end, "
                                  "stop it, or choose another output folder") from None
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S"),
                             "command": " ".join(sys.argv)[:500]}) + "\n")
        fh.flush()
        self._fh = fh
        return self

    def release(self) -> None:
        if self._fh is not None:
            import fcntl

            fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _holder_text(text: str) -> str:
    try:
        info = json.loads(text)
        return f"pid {info['pid']} on {info['host']} since {info['since']}: {info['command']}"
    except (ValueError, KeyError, TypeError):
        return "holder unknown"


def stop_with_parent(sig: int = signal.SIGTERM) -> bool:
    """Ask the kernel to send ``sig`` to this process when its parent exits (Linux); True when set.

    Only meant for a process whose parent is a launcher that owns its lifetime (torchrun's agent). If the parent
    is already gone when this runs, ``sig`` is sent at once."""
    if not sys.platform.startswith("linux"):
        return False
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(1, int(sig), 0, 0, 0) != 0:  # PR_SET_PDEATHSIG = 1
            return False
    except (OSError, AttributeError):
        return False
    if os.getppid() != parent:  # the parent died before prctl took effect
        os.kill(os.getpid(), sig)
    return True


def under_torchrun() -> bool:
    """True in a worker started by torchrun / torch.distributed.elastic."""
    return "TORCHELASTIC_RUN_ID" in os.environ
