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


@dataclass(frozen=True)
class OfflineAnswers:
    """Every model's offline answers on the fixture: raw pixels, and PNG when PNGs are sent."""

    raw: dict[str, Expectation]
    png: dict[str, Expectation]  # empty when the run sends no PNG

    @property
    def models(self) -> list[str]:
        return list(self.raw)


def offline_answers(
    models_dir: Path, models: list[str], pixels: np.ndarray, pngs: list[bytes]
) -> OfflineAnswers:
    """Each model's latest version on ``pixels`` and, if ``pngs`` is not empty, on them.

    Each PNG is decoded once for all models: decoding is most of the cost (seconds for
    2,000 pictures), the model runs are a fraction of it.
    """
    versions = {model: latest_version(models_dir, model) for model in models}
    raw = {
        model: offline_expectation(models_dir, model, version, pixels)
        for model, version in versions.items()
    }
    if not pngs:
        return OfflineAnswers(raw, {})
    png_pixels = preprocess_pngs(pngs)
    png = {
        model: offline_expectation(models_dir, model, version, png_pixels)
        for model, version in versions.items()
    }
    return OfflineAnswers(raw, png)


def preprocess_pngs(pngs: list[bytes]) -> np.ndarray:
    """Float32 ``(N, 1, 28, 28)``: each PNG preprocessed the way the server does it."""
    from serving.codecs.images import decode_image

    pixels = np.stack([decode_image(png, max_pixels=_MAX_PNG_PIXELS) for png in pngs])
    return pixels.reshape(-1, 1, 28, 28)


def save_answers(path: Path, answers: OfflineAnswers) -> None:
    """Write ``answers`` as an ``.npz`` that ``load_answers`` reads back (no pickles)."""
    arrays = {}
    for path_kind, expectations in (("raw", answers.raw), ("png", answers.png)):
        for model, expectation in expectations.items():
            prefix = f"{path_kind}/{model}/"
            arrays[prefix + "version"] = np.array(expectation.version)
            arrays[prefix + "labels"] = expectation.labels
            arrays[prefix + "runner_up"] = expectation.runner_up
    with path.open("wb") as file:
        np.savez(file, **arrays)


def load_answers(path: Path) -> OfflineAnswers:
    tables: dict[str, dict[str, Expectation]] = {"raw": {}, "png": {}}
    with np.load(path, allow_pickle=False) as archive:
        for key in archive.files:
            path_kind, model, name = key.split("/")
            if name == "version":
                prefix = f"{path_kind}/{model}/"
                tables[path_kind][model] = Expectation(
                    model,
                    str(archive[key]),
                    archive[prefix + "labels"],
                    archive[prefix + "runner_up"],
                )
    return OfflineAnswers(tables["raw"], tables["png"])


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
