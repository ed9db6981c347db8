"""prometheus-client's multiprocess mode (``serving/metrics_multiprocess.py``): several
workers' counts add up in one scrape, dead workers' gauges go, and a fresh server starts
from zero in the operator's directory.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest

from serving.metrics_multiprocess import prepare_multiprocess_dir
from tests.support import metric_samples, metric_value, running_server

READY = {"model": "tiny", "version": "1"}

# Multiprocess mode is chosen when prometheus-client is imported, so each "worker" here is
# a fresh interpreter; the directory is shared as uvicorn's workers share it.
WORKER = textwrap.dedent(
    """
    import sys
    from serving.metrics import ServingMetrics
    metrics = ServingMetrics()
    metrics.set_model_ready(model="tiny", version="1", provider="CPU", is_ready=True)
    for _ in range(int(sys.argv[1])):
        metrics.request_finished(model="tiny", version="1", endpoint="v1", outcome="success",
                                 images=2, duration_s=0.001, queue_s=0.0001)
    metrics.set_queue_depth(model="tiny", version="1", images=9, requests=3)
    metrics.in_flight.inc()
    """
)
RENDER = textwrap.dedent(
    """
    import sys
    from serving.metrics import ServingMetrics, render_metrics
    metrics = ServingMetrics()  # a worker that has loaded the same model
    metrics.set_model_ready(model="tiny", version="1", provider="CPU", is_ready=True)
    sys.stdout.write(render_metrics(metrics)[0].decode())
    """
)


def run_python(code: str, *args: str, metrics_dir: Path) -> str:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    completed = subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, check=True
    )
    return completed.stdout


def test_workers_counts_add_up_and_dead_workers_gauges_go(tmp_path: Path) -> None:
    run_python(WORKER, "7", metrics_dir=tmp_path)
    run_python(WORKER, "5", metrics_dir=tmp_path)

    samples = metric_samples(run_python(RENDER, metrics_dir=tmp_path))

    assert metric_value(samples, "mnist_serve_requests_total", **READY, outcome="success") == 12
    assert metric_value(samples, "mnist_serve_images_total", **READY) == 24
    assert metric_value(samples, "mnist_serve_queue_duration_seconds_count", **READY) == 12
    assert metric_value(samples, "nv_inference_request_success_total", **READY) == 12
    # Both writers have exited: their in-flight and queue gauges no longer count.
    assert metric_value(samples, "mnist_serve_requests_in_flight") == 0
    assert metric_value(samples, "mnist_serve_queue_depth_images", **READY) == 0


def test_prepare_multiprocess_dir_empties_the_operators_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stale = tmp_path / "counter_1234.db"
    stale.write_bytes(b"last run")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))

    directory = prepare_multiprocess_dir()

    assert directory == tmp_path
    assert not stale.exists()
    assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == str(tmp_path)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_fresh_server_counts_from_zero_in_the_operators_metrics_directory(
    tmp_path: Path, tiny_repo: Path, workers: str
) -> None:
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    run_python(WORKER, "7", metrics_dir=metrics_dir)  # the last run's files
    env = {"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir), "MNIST_SERVE_WORKERS": workers}

    with running_server(tiny_repo, env=env) as (url, _):
        samples = metric_samples(httpx.get(f"{url}/metrics", timeout=10).text)

    assert metric_value(samples, "mnist_serve_requests_total", model="tiny") == 0
    assert metric_value(samples, "mnist_serve_model_ready", model="tiny") == 2  # versions 1, 2


def test_multiprocess_mode_exports_no_series_of_an_unloaded_version(
    tmp_path: Path, tiny_repo: Path
) -> None:
    # One worker may control models; its values still live in files, which keep them.
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "MNIST_SERVE_MODEL_CONTROL": "true"}

    def tiny_series(url: str) -> dict[tuple[str, str], float]:
        samples = metric_samples(httpx.get(f"{url}/metrics", timeout=10).text)
        return {
            (name, dict(labels)["version"]): value
            for (name, labels), value in samples.items()
            if ("model", "tiny") in labels
        }

    with running_server(tiny_repo, env=env) as (url, _):
        load = f"{url}/v2/repository/models/tiny/load"
        assert httpx.post(load, timeout=30).status_code == 200
        reloaded = tiny_series(url)
        assert httpx.post(f"{url}/v2/repository/models/tiny/unload", timeout=30).status_code == 200
        unloaded = tiny_series(url)

    ready = "mnist_serve_model_ready"
    assert (reloaded[(ready, "1")], reloaded[(ready, "2")]) == (1, 1)
    assert reloaded[("nv_inference_count_total", "2")] == 0
    assert unloaded == {}  # neither ours nor Triton's
