from __future__ import annotations

from pathlib import Path

import pytest

from shards.paths import shared_data_dir


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real RS samples (../shared/data or $RS_SHARED_DATA); tests using it skip when it is absent."""
    root = shared_data_dir()
    if not (root / "README.md").exists():
        pytest.skip(f"real RS samples not found at {root} (set RS_SHARED_DATA to their folder)")
    return root
