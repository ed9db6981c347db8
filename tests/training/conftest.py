"""Fixtures for the training tests; ``mnist`` is session-scoped (load once, ~0.2 s cached)."""

from __future__ import annotations

import pytest

from training.data import Mnist, load_mnist


@pytest.fixture(scope="session")
def mnist() -> Mnist:
    """The verified official MNIST, fetched into the user cache on first use."""
    return load_mnist()
