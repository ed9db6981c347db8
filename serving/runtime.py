"""One ONNX Runtime session per model version: providers, threads, warm-up.

ONNX Runtime silently falls back to the CPU when a provider cannot start, so the
providers a session really got are checked after it is created.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from serving.card import ModelCard
from serving.settings import Device, GraphOptimization

logger = logging.getLogger("mnist_serve.runtime")

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"

_GRAPH_OPTIMIZATION = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


class ModelLoadError(Exception):
    """A model version cannot be served; the message says which file and why."""


class DeviceUnavailable(ModelLoadError):
    """``--device cuda`` was asked for on a machine or install that cannot give it."""


def usable_cpus() -> int:
    """CPUs this process may use: the smaller of its affinity mask and its cgroup quota."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    quota = _cgroup_cpu_quota()
    if quota is not None:
        cpus = min(cpus or 1, max(1, int(quota)))
    return max(1, cpus or 1)


def _cgroup_cpu_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPU quota from cgroup v2 ``cpu.max`` or v1 ``cfs_quota_us``; None when unlimited."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota_us <= 0 else quota_us / period_us
    except (OSError, ValueError):
        return None


def cpus_per_worker(workers: int) -> int:
    """The usable CPUs split across worker processes, at least one each."""
    return max(1, usable_cpus() // max(1, workers))


def default_intra_op_threads(workers: int) -> int:
    """A thread per CPU of the worker's share, so the workers do not oversubscribe."""
    return cpus_per_worker(workers)


def select_providers(device: Device, available: Sequence[str]) -> list[str]:
    """Execution providers to ask for; raises when ``cuda`` is asked and impossible."""
    if device == "cpu":
        return [CPU]
    if CUDA in available:
        return [CUDA, CPU]
    if device == "cuda":
        raise DeviceUnavailable(
            "--device cuda needs onnxruntime-gpu and a CUDA GPU: install the 'gpu' extra "
            f"(pip install 'mnist-serve[gpu]'); this ONNX Runtime offers {list(available)}"
        )
    logger.warning("device=auto: CUDA is not available here, serving on the CPU")
    return [CPU]


def check_active_provider(device: Device, active: Sequence[str]) -> str:
    """The provider a session really runs on; ``cuda`` must not have fallen back."""
    provider = active[0] if active else CPU
    if device == "cuda" and provider != CUDA:
        raise DeviceUnavailable(
            f"--device cuda: ONNX Runtime could not start CUDA (session got {list(active)}); "
            "check the GPU driver and the CUDA/cuDNN libraries onnxruntime-gpu needs"
        )
    if device == "auto" and provider != CUDA and CUDA in active:
        logger.warning("device=auto: CUDA did not start, serving on the CPU")
    return provider


class OnnxRuntimeModel:
    """An ONNX Runtime session checked against its model card's input/output contract."""

    def __init__(
        self,
        path: Path,
        card: ModelCard,
        *,
        device: Device = "cpu",
        intra_op_threads: int = 1,
        inter_op_threads: int = 1,
        graph_optimization: GraphOptimization = "all",
    ) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = inter_op_threads
        options.graph_optimization_level = _GRAPH_OPTIMIZATION[graph_optimization]
        options.log_severity_level = 3
        # Spinning threads burn a core waiting for the next batch; the event loop needs it.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        providers = select_providers(device, ort.get_available_providers())
        try:
            self._session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as error:  # ORT raises its own untyped errors for bad files
            raise ModelLoadError(f"{path}: ONNX Runtime cannot load it: {error}") from error
        self.provider = check_active_provider(device, self._session.get_providers())
        self.input_name = card.inputs[0].name
        self.output_name = card.outputs[0].name
        self._check_contract(path, card)

    def _check_contract(self, path: Path, card: ModelCard) -> None:
        inputs = self._session.get_inputs()
        outputs = self._session.get_outputs()
        expected_in, expected_out = card.inputs[0], card.outputs[0]
        if len(inputs) != 1 or inputs[0].name != expected_in.name:
            found = [tensor.name for tensor in inputs]
            raise ModelLoadError(f"{path}: inputs {found}, card says [{expected_in.name!r}]")
        if inputs[0].type != "tensor(float)" or list(inputs[0].shape[1:]) != expected_in.shape[1:]:
            raise ModelLoadError(
                f"{path}: input {inputs[0].type} {inputs[0].shape}, card says "
                f"{expected_in.datatype} {expected_in.shape}"
            )
        if expected_out.name not in [tensor.name for tensor in outputs]:
            found = [tensor.name for tensor in outputs]
            raise ModelLoadError(f"{path}: outputs {found}, card says {expected_out.name!r}")

    def run(self, images: np.ndarray) -> np.ndarray:
        """Logits for a float32 batch [N, 1, 28, 28]; thread-safe, releases the GIL."""
        return self._session.run([self.output_name], {self.input_name: images})[0]

    def warm_up(self, batch_sizes: Iterable[int]) -> dict[int, float]:
        """Run each batch size so no client pays ORT's first-call cost for a shape.

        Returns each size's time on its second, warm run, in seconds.
        """
        timings: dict[int, float] = {}
        for batch_size in batch_sizes:
            images = np.zeros((batch_size, 1, 28, 28), dtype=np.float32)
            self.run(images)
            started = time.perf_counter()
            self.run(images)
            timings[batch_size] = time.perf_counter() - started
        return timings
