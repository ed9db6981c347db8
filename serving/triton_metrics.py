"""Triton's metric names (``nv_inference_*``), derived from ours when /metrics is rendered.

Deriving them at scrape time, from the families already collected (one process's
registry or every worker's files), costs the hot path nothing and keeps one source of
truth. Triton's counters have no ``_total`` suffix, which prometheus-client always
adds, so this block is written in the text format by hand. The mapping is in
docs/metrics.md; names and labels follow Triton's docs/user_guide/metrics.md.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

ModelKey = tuple[str, str]

# Our request outcomes as Triton's failure reasons (Triton's REJECTED is a scheduler
# timeout; a full queue is our other way of refusing work in the scheduler).
FAILURE_REASONS = {
    "client_error": "OTHER",
    "rejected": "REJECTED",
    "timeout": "REJECTED",
    "server_error": "BACKEND",
}
TRITON_REASONS = ("REJECTED", "CANCELED", "BACKEND", "OTHER")


@dataclass(frozen=True)
class _Derived:
    name: str
    help: str
    source: str  # the sample name read, e.g. mnist_serve_images_total
    scale: float = 1.0
    type: str = "counter"
    where: Callable[[dict[str, str]], bool] = lambda labels: True


_US = 1e6
DERIVED = (
    _Derived(
        "nv_inference_request_success",
        "Number of successful inference requests, all batch sizes",
        "mnist_serve_requests_total",
        where=lambda labels: labels.get("outcome") == "success",
    ),
    _Derived(
        "nv_inference_count",
        "Number of inferences performed (a request of n images counts n)",
        "mnist_serve_images_total",
    ),
    _Derived(
        "nv_inference_exec_count",
        "Number of model executions performed (batches)",
        "mnist_serve_batch_executions_total",
    ),
    _Derived(
        "nv_inference_request_duration_us",
        "Cumulative inference request duration in microseconds (every outcome)",
        "mnist_serve_request_duration_seconds_sum",
        scale=_US,
    ),
    _Derived(
        "nv_inference_queue_duration_us",
        "Cumulative inference queuing duration in microseconds",
        "mnist_serve_queue_duration_seconds_sum",
        scale=_US,
    ),
    _Derived(
        "nv_inference_compute_infer_duration_us",
        "Cumulative compute inference duration in microseconds, per request",
        "mnist_serve_request_compute_duration_seconds_sum",
        scale=_US,
    ),
    _Derived(
        "nv_inference_pending_request_count",
        "Instantaneous number of pending requests awaiting execution per-model",
        "mnist_serve_queue_depth_requests",
        type="gauge",
    ),
)


def render_triton_metrics(families: Iterable[Metric]) -> bytes:
    """The ``nv_inference_*`` block, one series per loaded (model, version), zeros included."""
    samples = [
        sample
        for family in families
        if family.name.startswith("mnist_serve_")
        for sample in family.samples
    ]
    models = sorted({key for sample in samples if (key := _model_key(sample)) is not None})
    lines: list[str] = []
    for derived in DERIVED:
        values = _sum_by_model(samples, derived.source, derived.where)
        _header(lines, derived.name, derived.help, derived.type)
        for key in models:
            # Whole counts and microseconds, as Triton reports them.
            lines.append(_line(derived.name, key, round(values.get(key, 0.0) * derived.scale)))
    _failures(lines, samples, models)
    return "".join(lines).encode()


def _failures(lines: list[str], samples: list[Sample], models: list[ModelKey]) -> None:
    by_reason: dict[tuple[ModelKey, str], float] = defaultdict(float)
    for sample in samples:
        key = _model_key(sample)
        reason = FAILURE_REASONS.get(sample.labels.get("outcome", ""))
        if sample.name == "mnist_serve_requests_total" and key is not None and reason:
            by_reason[(key, reason)] += sample.value
    _header(
        lines,
        "nv_inference_request_failure",
        "Number of failed inference requests, all batch sizes",
        "counter",
    )
    for key in models:
        for reason in TRITON_REASONS:
            value = by_reason.get((key, reason), 0.0)
            lines.append(_line("nv_inference_request_failure", key, value, reason=reason))


def _sum_by_model(
    samples: list[Sample], name: str, where: Callable[[dict[str, str]], bool]
) -> dict[ModelKey, float]:
    totals: dict[ModelKey, float] = defaultdict(float)
    for sample in samples:
        key = _model_key(sample)
        if sample.name == name and key is not None and where(sample.labels):
            totals[key] += sample.value
    return totals


def _model_key(sample: Sample) -> ModelKey | None:
    model = sample.labels.get("model")
    version = sample.labels.get("version")
    return None if model is None or version is None else (model, version)


def _header(lines: list[str], name: str, help_text: str, metric_type: str) -> None:
    lines.append(f"# HELP {name} {help_text}\n# TYPE {name} {metric_type}\n")


def _line(name: str, key: ModelKey, value: float, **extra: str) -> str:
    """One sample line; label values are escaped as the text format requires."""
    labels = {"model": key[0], "version": key[1], **extra}
    rendered = ",".join(f'{label}="{_escape(text)}"' for label, text in sorted(labels.items()))
    return f"{name}{{{rendered}}} {floatToGoString(value)}\n"


def _escape(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
