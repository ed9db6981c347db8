"""What each model answers offline: ONNX Runtime on the same fixture pixels, no server.

The served label of an image must be the label ORT gives for it offline. When the
top two logits are closer than ``TIE_MARGIN`` either is accepted: batch size and
thread count change float summation order, which may flip a near-tie (and only that).
For PNG uploads the offline pixels are the server's own picture preprocessing of
the same PNG bytes (``serving.codecs.images.decode_image``), so that path is
checked image by image too; whether the preprocessing costs accuracy is measured
separately, against the raw-pixel answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

MODEL_FILE = "model.onnx"
# Logit gaps this small are within float32 reordering noise for these models.
TIE_MARGIN = 1e-3
_CHUNK_IMAGES = 250
_MAX_PNG_PIXELS = 28 * 28


@dataclass(frozen=True)
class Expectation:
    """Offline answers of one model version on the fixture."""

    model: str
    version: str
    labels: np.ndarray  # (N,) ORT argmax
    runner_up: np.ndarray  # (N,) second label when within TIE_MARGIN, else -1

    def accepts(self, index: int, label: int) -> bool:
        return label == self.labels[index] or label == self.runner_up[index]


def latest_version(models_dir: Path, model: str) -> str:
    """The highest integer version directory of ``model`` holding a model file."""
    versions = [
        int(entry.name)
        for entry in (models_dir / model).iterdir()
        if entry.name.isdigit() and (entry / MODEL_FILE).is_file()
    ]
    if not versions:
        raise FileNotFoundError(f"no {models_dir / model}/<version>/{MODEL_FILE}")
    return str(max(versions))


def offline_png_expectation(
    models_dir: Path, model: str, version: str, pngs: list[bytes]
) -> Expectation:
    """As ``offline_expectation``, on each PNG preprocessed the way the server does it."""
    from serving.codecs.images import decode_image

    pixels = np.stack([decode_image(png, max_pixels=_MAX_PNG_PIXELS) for png in pngs])
    return offline_expectation(models_dir, model, version, pixels.reshape(-1, 1, 28, 28))


def offline_expectation(
    models_dir: Path, model: str, version: str, pixels: np.ndarray
) -> Expectation:
    """Run ``models_dir/model/version/model.onnx`` over ``pixels`` (float32 N,1,28,28)."""
    logits = run_onnx(models_dir / model / version / MODEL_FILE, pixels)
    order = np.argsort(logits, axis=1)
    labels, second = order[:, -1], order[:, -2]
    rows = np.arange(len(logits))
    is_tie = logits[rows, labels] - logits[rows, second] < TIE_MARGIN
    return Expectation(model, version, labels, np.where(is_tie, second, -1))


def run_onnx(model_path: Path, pixels: np.ndarray, threads: int = 1) -> np.ndarray:
    """Logits ``(N, 10)``; one thread, so the load generator leaves the cores to the server."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(
        str(model_path), sess_options=options, providers=["CPUExecutionProvider"]
    )
    outputs = [
        session.run(None, {session.get_inputs()[0].name: pixels[start : start + _CHUNK_IMAGES]})[0]
        for start in range(0, len(pixels), _CHUNK_IMAGES)
    ]
    return np.concatenate(outputs).astype(np.float32)
