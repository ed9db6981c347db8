"""Training configurations: defaults, overrides, and what each model takes."""

from __future__ import annotations

import pytest

from training.config import config_for
from training.errors import ConfigError


def test_a_hyper_parameter_the_model_does_not_take_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"^mnist_linear does not take hidden, dropout"):
        config_for("mnist_linear", hidden=(512, 256), dropout=0.5)


def test_architecture_records_only_what_the_model_uses() -> None:
    assert config_for("mnist_linear", epochs=1, shift_px=1).architecture() == {}
    assert config_for("mnist_mlp", hidden=(32,)).architecture() == {
        "hidden": (32,),
        "dropout": 0.2,
    }
