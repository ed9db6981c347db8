"""Fixtures of the v1 API tests: one app on the tiny models, driven by a TestClient.

The client is package-scoped: the test modules share one app (as the single module they
were split from did), so the split adds no start-up time. Tests that need other settings
build their own app.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from serving.app import create_app
from serving.settings import Settings


@pytest.fixture(scope="package")
def client(tiny_repo: Path) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(models_dir=tiny_repo))) as test_client:
        yield test_client
