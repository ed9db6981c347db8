"""Train an MNIST classifier: seeded, one-cycle LR, best epoch chosen on validation.

The loop reads like pytorch/examples' mnist/main.py: ``train_one_epoch`` and
``evaluate`` are small steps and ``fit`` strings them together. The test set is only
touched once, after the checkpoint has been chosen on the validation split.
"""

from __future__ import annotations

import copy
import random
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from training.config import TrainConfig
from training.data import Mnist
from training.models import build_model

EVAL_BATCH_SIZE = 1000


@dataclass
class TrainResult:
    """The chosen model and how it was chosen."""

    model: nn.Module
    config: TrainConfig
    validation_accuracy: float
    test_accuracy: float
    best_epoch: int
    training_time_s: float
    history: list[dict[str, float]] = field(default_factory=list)


def seed_everything(seed: int, threads: int) -> None:
    """The one place randomness and threading are fixed."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)


def as_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, 28, 28) -> float32 (N, 1, 28, 28) in [0, 1]: the serving contract."""
    return torch.from_numpy(images).float().div_(255.0).unsqueeze(1)


def as_labels(labels: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(labels.astype(np.int64))


def shift_images(
    images: torch.Tensor, max_shift_px: int, generator: torch.Generator
) -> torch.Tensor:
    """Translate each image by its own random (dy, dx) in [-max, max], filling with 0."""
    count, _, height, width = images.shape
    padded = nn.functional.pad(images, [max_shift_px] * 4)
    dy, dx = torch.randint(0, 2 * max_shift_px + 1, (2, count, 1), generator=generator)
    rows = (dy + torch.arange(height))[:, :, None]
    cols = (dx + torch.arange(width))[:, None, :]
    return padded[torch.arange(count)[:, None, None], 0, rows, cols].unsqueeze(1)


def train_one_epoch(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    config: TrainConfig,
    generator: torch.Generator,
    description: str,
) -> dict[str, float]:
    """One pass over shuffled ``images``; returns mean loss and accuracy."""
    model.train()
    loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    order = torch.randperm(len(images), generator=generator)
    loss_sum, correct, seen = 0.0, 0, 0
    with tqdm(total=len(images), desc=description, unit="img", leave=False) as bar:
        for batch in order.split(config.batch_size):
            batch_images = images[batch]
            if config.shift_px:
                batch_images = shift_images(batch_images, config.shift_px, generator)
            logits = model(batch_images)
            loss = loss_fn(logits, labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            loss_sum += loss.item() * len(batch)
            correct += int((logits.argmax(1) == labels[batch]).sum())
            seen += len(batch)
            bar.update(len(batch))
            bar.set_postfix(
                loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.4f}", refresh=False
            )
    return {"loss": loss_sum / seen, "accuracy": correct / seen}


@torch.inference_mode()
def predict_logits(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    model.eval()
    return torch.cat([model(chunk) for chunk in images.split(EVAL_BATCH_SIZE)])


def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Accuracy in [0, 1]."""
    correct = int((predict_logits(model, images).argmax(1) == labels).sum())
    return correct / len(labels)


def split(mnist: Mnist, config: TrainConfig) -> tuple[torch.Tensor, ...]:
    """(train images, train labels, validation images, validation labels) as tensors."""
    images, labels = mnist.train_images, mnist.train_labels
    if config.train_images_limit is not None:
        images = images[: config.train_images_limit]
        labels = labels[: config.train_images_limit]
    cut = len(images) - config.validation_images
    if cut <= 0:
        raise ValueError(f"{len(images)} images leave none after {config.validation_images}")
    return (
        as_tensor(images[:cut]),
        as_labels(labels[:cut]),
        as_tensor(images[cut:]),
        as_labels(labels[cut:]),
    )


def fit(config: TrainConfig, mnist: Mnist) -> TrainResult:
    """Train, keep the epoch with the best validation accuracy, then score it on test."""
    seed_everything(config.seed, config.threads)
    generator = torch.Generator().manual_seed(config.seed)
    train_images, train_labels, val_images, val_labels = split(mnist, config)
    model = build_model(config.model, **config.architecture())
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.max_lr, weight_decay=config.weight_decay
    )
    steps_per_epoch = -(-len(train_images) // config.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.max_lr, total_steps=config.epochs * steps_per_epoch
    )
    best_accuracy, best_epoch, best_state = -1.0, 0, copy.deepcopy(model.state_dict())
    history = []
    started_s = time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        description = f"{config.model} epoch {epoch}/{config.epochs}"
        stats = train_one_epoch(
            model, train_images, train_labels, optimizer, scheduler, config, generator, description
        )
        stats["validation_accuracy"] = evaluate(model, val_images, val_labels)
        history.append({"epoch": epoch, **stats})
        tqdm.write(
            f"{description}: loss {stats['loss']:.4f} train acc {stats['accuracy']:.4f} "
            f"val acc {stats['validation_accuracy']:.4f}"
        )
        if stats["validation_accuracy"] > best_accuracy:
            best_accuracy, best_epoch = stats["validation_accuracy"], epoch
            best_state = copy.deepcopy(model.state_dict())
    training_time_s = time.perf_counter() - started_s
    model.load_state_dict(best_state)
    model.eval()
    test_accuracy = evaluate(model, as_tensor(mnist.test_images), as_labels(mnist.test_labels))
    return TrainResult(
        model, config, best_accuracy, test_accuracy, best_epoch, training_time_s, history
    )
