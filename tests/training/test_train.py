"""Training: learns on a small subset, is deterministic, keeps the best validation epoch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.config import TrainConfig, config_for
from training.data import Mnist
from training.train import fit, shift_images


def small(model: str, **overrides: object) -> TrainConfig:
    """2,000 training + 500 validation images: about a second per epoch."""
    settings = {"epochs": 1, "train_images_limit": 2500, "validation_images": 500, **overrides}
    return config_for(model, **settings)


def test_short_run_on_subset_beats_chance_by_far(mnist: Mnist) -> None:
    result = fit(small("mnist_mlp", hidden=(64,)), mnist)

    assert result.test_accuracy > 0.7  # chance is 0.1
    assert result.validation_accuracy > 0.7


def test_same_seed_gives_identical_weights(mnist: Mnist) -> None:
    config = small("mnist_cnn", hidden=(16,), shift_px=2, seed=3)

    first = fit(config, mnist).model.state_dict()
    second = fit(config, mnist).model.state_dict()
    other_seed = fit(small("mnist_cnn", hidden=(16,), shift_px=2, seed=4), mnist)

    assert all(torch.equal(first[name], second[name]) for name in first)
    assert not torch.equal(first["1.weight"], other_seed.model.state_dict()["1.weight"])


def test_chosen_epoch_is_the_best_on_validation(mnist: Mnist) -> None:
    result = fit(small("mnist_linear", epochs=4), mnist)

    accuracies = [epoch["validation_accuracy"] for epoch in result.history]
    assert len(accuracies) == 4
    assert result.best_epoch == int(np.argmax(accuracies)) + 1
    assert result.validation_accuracy == max(accuracies)


@pytest.mark.parametrize("max_shift_px", [1, 2])
def test_shift_moves_each_image_by_at_most_max_pixels(max_shift_px: int) -> None:
    images = torch.zeros(64, 1, 28, 28)
    images[:, 0, 14, 14] = 1.0
    generator = torch.Generator().manual_seed(0)

    shifted = shift_images(images, max_shift_px, generator)

    assert shifted.shape == images.shape
    rows, cols = np.nonzero(shifted[:, 0].sum(0).numpy())
    assert torch.equal(shifted.sum((1, 2, 3)), torch.ones(64))  # nothing lost or duplicated
    assert abs(rows - 14).max() == max_shift_px
    assert abs(cols - 14).max() == max_shift_px
