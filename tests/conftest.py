from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.driver import RunningDriver, running_driver


@pytest.fixture
def driver(tmp_path: Path) -> Iterator[RunningDriver]:
    """A driver serving on a fresh data directory."""
    with running_driver(tmp_path / "data") as running:
        yield running
