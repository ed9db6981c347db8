"""Fixtures of the reliability tests: a repository holding the marker model."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reliability.models import write_marker_model


@pytest.fixture(scope="session")
def marker_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository with one model, ``marker`` v1 (see tests/reliability/models.py)."""
    repo = tmp_path_factory.mktemp("marker-models")
    write_marker_model(repo)
    return repo
