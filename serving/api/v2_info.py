"""What the V2 metadata, model-configuration and statistics endpoints say about a model.

Pure functions of a served model and the settings, so they are tested without HTTP.
Every number comes from the model's batcher and runtime as they really run.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from serving.batcher_stats import BatcherStats, ComputeStats, DurationStat
from serving.card import MODEL_FILE, TensorSpec
from serving.repository import IndexEntry, ServedModel
from serving.runtime import CUDA
from serving.settings import Settings

PLATFORM = "onnxruntime_onnx"
# Extensions really implemented (each has routes and tests); Triton spells them so.
EXTENSIONS = ("binary_tensor_data", "model_configuration", "statistics", "model_repository")


def _tensor(spec: TensorSpec) -> dict[str, Any]:
    return {"name": spec.name, "datatype": spec.datatype, "shape": spec.shape}


def model_metadata(model: ServedModel, versions: Iterable[str]) -> dict[str, Any]:
    """``$metadata_model_response``: names, datatypes and shapes from the model card."""
    return {
        "name": model.name,
        "versions": sorted(versions, key=int),
        "platform": PLATFORM,
        "inputs": [_tensor(spec) for spec in model.card.inputs],
        "outputs": [_tensor(spec) for spec in model.card.outputs],
    }


def _config_tensor(spec: TensorSpec, *, is_input: bool) -> dict[str, Any]:
    tensor = {"name": spec.name, "data_type": f"TYPE_{spec.datatype}", "dims": spec.shape[1:]}
    if is_input and len(spec.shape) == 4:
        tensor["format"] = "FORMAT_NCHW"
    return tensor


def model_config(model: ServedModel, settings: Settings) -> dict[str, Any]:
    """Triton's ModelConfig JSON with the settings this model version really runs with.

    ``dims`` leave out the batch dimension, as Triton does when ``max_batch_size`` > 0.
    ``max_batch_size`` is the largest ONNX Runtime call; one request may carry up to
    ``max_images_per_request`` images (split into such calls). Queue sizes count images.
    """
    batching = model.batcher.config
    config: dict[str, Any] = {
        "name": model.name,
        "platform": PLATFORM,
        "backend": "onnxruntime",
        "version_policy": {"all": {}},
        "max_batch_size": batching.max_batch_size,
        "input": [_config_tensor(spec, is_input=True) for spec in model.card.inputs],
        "output": [_config_tensor(spec, is_input=False) for spec in model.card.outputs],
        "instance_group": [_instance_group(model)],
        "default_model_filename": MODEL_FILE,
        "parameters": {
            key: {"string_value": str(value)}
            for key, value in {
                "execution_provider": model.provider,
                "max_images_per_request": settings.max_images_per_request,
                "intra_op_threads": settings.intra_op_threads or "auto",
                "graph_optimization": settings.graph_optimization,
            }.items()
        },
    }
    if batching.batching:
        config["dynamic_batching"] = {
            "max_queue_delay_microseconds": round(batching.max_queue_delay_s * 1e6),
            "preserve_ordering": False,
            "default_queue_policy": {
                "timeout_action": "REJECT",
                "default_timeout_microseconds": round(settings.request_timeout_s * 1e6),
                "allow_timeout_override": True,
                "max_queue_size": batching.max_queue_size,
            },
        }
    return config


def _instance_group(model: ServedModel) -> dict[str, Any]:
    is_gpu = model.provider == CUDA
    return {
        "name": f"{model.name}_{model.version}",
        "kind": "KIND_GPU" if is_gpu else "KIND_CPU",
        "count": 1,
        "gpus": [0] if is_gpu else [],
    }


NO_DURATION = DurationStat()


def _duration(stat: DurationStat) -> dict[str, int]:
    return {"count": stat.count, "ns": stat.ns}


def model_statistics(model: ServedModel) -> dict[str, Any]:
    """``$model_stat`` from the counters the batcher keeps."""
    stats: BatcherStats = model.batcher.stats
    return {
        "name": model.name,
        "version": model.version,
        "last_inference": stats.last_inference_ms,
        "inference_count": stats.inference_count,
        "execution_count": stats.execution_count,
        "inference_stats": {
            "success": _duration(stats.success),
            "fail": _duration(stats.fail),
            "queue": _duration(stats.queue),
            **_compute(stats),
            # Triton's response cache; this server has none, so nothing hits or misses it.
            "cache_hit": _duration(NO_DURATION),
            "cache_miss": _duration(NO_DURATION),
        },
        "batch_stats": [
            {"batch_size": size, **_compute(stat)}
            for size, stat in sorted(stats.batch_sizes.items())
        ],
    }


def _compute(stats: ComputeStats) -> dict[str, dict[str, int]]:
    return {
        "compute_input": _duration(stats.compute_input),
        "compute_infer": _duration(stats.compute_infer),
        "compute_output": _duration(stats.compute_output),
    }


def index_entry(entry: IndexEntry) -> dict[str, str]:
    return {
        "name": entry.name,
        "version": entry.version,
        "state": entry.state,
        "reason": entry.reason,
    }
