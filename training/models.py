"""The MNIST classifiers, chosen by name.

Every model takes float32 [N, 1, 28, 28] in [0, 1] and returns [N, 10] logits; the
normalisation is a layer inside the module so it is exported into the ONNX graph.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

# Mean and std of the MNIST training pixels scaled to [0, 1].
PIXEL_MEAN = 0.1307
PIXEL_STD = 0.3081
CLASSES = 10
IMAGE_PIXELS = 28 * 28


class Normalize(nn.Module):
    """(images - mean) / std, with constants that end up in the exported graph."""

    def __init__(self, mean: float = PIXEL_MEAN, std: float = PIXEL_STD) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean))
        self.register_buffer("std", torch.tensor(std))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.mean) / self.std


def mnist_linear() -> nn.Module:
    """Softmax regression: the baseline every other model must beat."""
    return nn.Sequential(Normalize(), nn.Flatten(), nn.Linear(IMAGE_PIXELS, CLASSES))


def mnist_mlp(hidden: Sequence[int] = (512, 512), dropout: float = 0.2) -> nn.Module:
    """The Keras MLP example: 784 -> Dense 512 ReLU -> Dense 512 ReLU -> Dense 10."""
    layers: list[nn.Module] = [Normalize(), nn.Flatten()]
    width = IMAGE_PIXELS
    for units in hidden:
        layers += [nn.Linear(width, units), nn.ReLU(), nn.Dropout(dropout)]
        width = units
    layers.append(nn.Linear(width, CLASSES))
    return nn.Sequential(*layers)


def mnist_cnn(hidden: Sequence[int] = (128,), dropout: float = 0.0, filters: int = 32) -> nn.Module:
    """The Keras CNN: Conv 32 3x3 ReLU -> MaxPool 2x2 -> Flatten -> Dense 128 ReLU -> Dense 10."""
    layers: list[nn.Module] = [
        Normalize(),
        nn.Conv2d(1, filters, kernel_size=3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
    ]
    width = filters * 13 * 13  # 28 -> 26 (3x3 valid conv) -> 13 (2x2 pool)
    for units in hidden:
        layers += [nn.Dropout(dropout), nn.Linear(width, units), nn.ReLU()]
        width = units
    layers += [nn.Dropout(dropout), nn.Linear(width, CLASSES)]
    return nn.Sequential(*layers)


MODELS: dict[str, Callable[..., nn.Module]] = {
    "mnist_linear": mnist_linear,
    "mnist_mlp": mnist_mlp,
    "mnist_cnn": mnist_cnn,
}


def build_model(name: str, **hyper_parameters: object) -> nn.Module:
    """A fresh model by name; unknown names raise KeyError listing the known ones."""
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    return MODELS[name](**hyper_parameters)
