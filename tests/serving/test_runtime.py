"""ONNX Runtime wrapper: provider selection and fallback, thread defaults, contract checks."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from serving.card import MODEL_FILE, ModelCard
from serving.runtime import (
    CPU,
    CUDA,
    DeviceUnavailable,
    ModelLoadError,
    OnnxRuntimeModel,
    _cgroup_cpu_quota,
    check_active_provider,
    default_intra_op_threads,
    select_providers,
    usable_cpus,
)
from tests.support import tiny_logits, write_tiny_model


def test_cpu_device_asks_only_for_the_cpu_provider() -> None:
    assert select_providers("cpu", [CUDA, CPU]) == [CPU]


def test_cuda_device_asks_for_cuda_then_cpu_when_onnxruntime_gpu_offers_it() -> None:
    assert select_providers("cuda", [CUDA, CPU]) == [CUDA, CPU]


def test_cuda_device_without_onnxruntime_gpu_fails_with_a_clear_message() -> None:
    with pytest.raises(DeviceUnavailable, match=r"onnxruntime-gpu.*mnist-serve\[gpu\]"):
        select_providers("cuda", [CPU])


def test_auto_device_falls_back_to_cpu_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="mnist_serve.runtime"):
        assert select_providers("auto", [CPU]) == [CPU]
    assert "CUDA is not available" in caplog.text


def test_auto_device_prefers_cuda_when_offered() -> None:
    assert select_providers("auto", [CUDA, CPU]) == [CUDA, CPU]


def test_cuda_session_that_silently_fell_back_to_cpu_is_refused() -> None:
    with pytest.raises(DeviceUnavailable, match="could not start CUDA"):
        check_active_provider("cuda", [CPU])


def test_active_provider_is_the_first_the_session_got() -> None:
    assert check_active_provider("cuda", [CUDA, CPU]) == CUDA
    assert check_active_provider("auto", [CPU]) == CPU


def test_cgroup_v2_quota_is_read(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert _cgroup_cpu_quota(tmp_path) == 1.5


def test_unlimited_cgroup_has_no_quota(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert _cgroup_cpu_quota(tmp_path) is None


def test_cgroup_v1_quota_is_read(tmp_path: Path) -> None:
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("50000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert _cgroup_cpu_quota(tmp_path) == 0.5


def test_threads_are_split_across_workers_without_going_below_one() -> None:
    assert default_intra_op_threads(1) == usable_cpus()
    assert default_intra_op_threads(usable_cpus() * 4) == 1


def test_session_reports_its_provider_and_computes_the_graph(tmp_path: Path) -> None:
    version_dir = write_tiny_model(tmp_path)
    model = OnnxRuntimeModel(version_dir / MODEL_FILE, ModelCard.read(version_dir))
    images = np.random.default_rng(3).random((5, 1, 28, 28), dtype=np.float32)
    assert model.provider == CPU
    assert np.allclose(model.run(images), tiny_logits(images), atol=1e-5)


def test_model_whose_input_differs_from_its_card_is_refused(tmp_path: Path) -> None:
    version_dir = write_tiny_model(tmp_path)
    card = ModelCard.read(version_dir)
    card.inputs[0].name = "pixels"
    with pytest.raises(ModelLoadError, match="inputs \\['input'\\], card says \\['pixels'\\]"):
        OnnxRuntimeModel(version_dir / MODEL_FILE, card)


def test_non_onnx_file_is_a_load_error_naming_the_file(tmp_path: Path) -> None:
    version_dir = write_tiny_model(tmp_path)
    (version_dir / MODEL_FILE).write_bytes(b"this is not a protobuf")
    with pytest.raises(ModelLoadError, match="ONNX Runtime cannot load it"):
        OnnxRuntimeModel(version_dir / MODEL_FILE, ModelCard.read(version_dir))
