"""What the V2 documents say about a model, for cases the CPU-only test app cannot reach."""

from __future__ import annotations

from types import SimpleNamespace

from serving.api.v2_info import model_config
from serving.batcher import BatcherConfig
from serving.card import ModelCard, TensorSpec
from serving.runtime import CPU, CUDA
from serving.settings import Settings


def served(provider: str) -> SimpleNamespace:
    """The fields of a ServedModel that model_config reads."""
    card = ModelCard(
        name="digits",
        version=3,
        architecture={"name": "cnn"},
        inputs=[TensorSpec(name="input", datatype="FP32", shape=[-1, 1, 28, 28])],
        outputs=[TensorSpec(name="logits", datatype="FP32", shape=[-1, 10])],
        model_sha256="0" * 64,
        opset=17,
        created="2026-01-01T00:00:00+00:00",
    )
    batcher = SimpleNamespace(config=BatcherConfig(max_batch_size=32))
    return SimpleNamespace(
        name="digits", version="3", card=card, batcher=batcher, provider=provider
    )


def test_cuda_model_is_a_gpu_instance_group() -> None:
    config = model_config(served(CUDA), Settings())

    assert config["instance_group"] == [
        {"name": "digits_3", "kind": "KIND_GPU", "count": 1, "gpus": [0]}
    ]
    assert config["parameters"]["execution_provider"] == {"string_value": CUDA}


def test_cpu_model_is_a_cpu_instance_group() -> None:
    config = model_config(served(CPU), Settings())

    assert config["instance_group"][0]["kind"] == "KIND_CPU"
    assert config["max_batch_size"] == 32
