"""Where developer/CI data lives. Never required by the main job: it only feeds tests and benchmarks."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def shared_data_dir() -> Path:
    """``$RS_SHARED_DATA`` if set, else ``../shared/data`` beside the project root."""
    env = os.environ.get("RS_SHARED_DATA")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data"
