"""Fixtures every test package shares."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import write_tiny_model
from training.data import Mnist, load_mnist


@pytest.fixture(scope="session")
def tiny_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model repository holding ``tiny`` versions 1 and 2 (different weights)."""
    repo = tmp_path_factory.mktemp("models")
    write_tiny_model(repo, "tiny", version=1, seed=0)
    write_tiny_model(repo, "tiny", version=2, seed=1)
    return repo


@pytest.fixture(scope="session")
def mnist() -> Mnist:
    """The verified official MNIST, fetched into the user cache once (~0.2 s when cached)."""
    return load_mnist()
