from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "images: builds the container images with hack/images (slow when cold)"
    )
