from __future__ import annotations

from pathlib import Path

import pytest

from rs_common.paths import shared_data_dir


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real RS samples (../shared/data or $RS_SHARED_DATA); tests using it skip when it is absent."""
    root = shared_data_dir()
    if not (root / "README.md").exists():
        pytest.skip(f"real RS samples not found at {root} (set RS_SHARED_DATA to their folder)")
    return root


def pytest_sessionfinish(session, exitstatus):
    """A run in which no test passed (nothing collected, or everything skipped/deselected) is a failure."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    passed = len(reporter.stats.get("passed", [])) if reporter is not None else 0
    if exitstatus == 0 and passed == 0:
        session.exitstatus = 1
