"""Triton's V2 extensions: model configuration, statistics and the model repository."""

from __future__ import annotations

import shutil
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from starlette.exceptions import StarletteDeprecationWarning

from serving.app import create_app
from serving.codecs import v2, v2_client
from serving.settings import Settings
from tests.support import metric_samples, never_parse, write_tiny_model

with warnings.catch_warnings():
    # Starlette 1.x asks for httpx2 to drive its TestClient; httpx 0.28 works the same.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient


@pytest.fixture(scope="module")
def client(tiny_repo: Path) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(models_dir=tiny_repo, model_control=True))) as test_client:
        yield test_client


@pytest.fixture
def own_repo(tmp_path: Path) -> Path:
    """A repository this test may change: ``tiny`` version 1 and ``other`` version 1."""
    write_tiny_model(tmp_path, "tiny", version=1, seed=0)
    write_tiny_model(tmp_path, "other", version=1, seed=2)
    return tmp_path


def infer(client: TestClient, images: int, path: str = "/v2/models/tiny/infer") -> Any:
    body, header_length = v2_client.encode_infer_request(np.zeros((images, 784), dtype=np.float32))
    return client.post(path, content=body, headers={v2.HEADER_LENGTH: str(header_length)})


def version_stats(client: TestClient, version: str) -> dict[str, Any]:
    (stats,) = client.get(f"/v2/models/tiny/versions/{version}/stats").json()["model_stats"]
    return stats


# --- model configuration ----------------------------------------------------------------


def test_config_reports_the_settings_the_model_runs_with(tiny_repo: Path) -> None:
    settings = Settings(
        models_dir=tiny_repo,
        max_batch_size=8,
        max_queue_delay_ms=2.5,
        max_queue_size=100,
        max_images_per_request=50,
        request_timeout_s=3,
    )
    with TestClient(create_app(settings)) as client:
        config = client.get("/v2/models/tiny/versions/1/config").json()

    assert config["name"] == "tiny"
    assert config["platform"] == "onnxruntime_onnx"
    assert config["max_batch_size"] == 8
    assert config["input"] == [
        {"name": "input", "data_type": "TYPE_FP32", "format": "FORMAT_NCHW", "dims": [1, 28, 28]}
    ]
    assert config["output"] == [{"name": "logits", "data_type": "TYPE_FP32", "dims": [10]}]
    assert config["dynamic_batching"]["max_queue_delay_microseconds"] == 2500
    queue_policy = config["dynamic_batching"]["default_queue_policy"]
    assert queue_policy["max_queue_size"] == 100
    assert queue_policy["default_timeout_microseconds"] == 3_000_000
    assert config["instance_group"][0]["kind"] == "KIND_CPU"
    assert config["parameters"]["max_images_per_request"] == {"string_value": "50"}
    assert config["parameters"]["execution_provider"] == {"string_value": "CPUExecutionProvider"}


def test_config_without_batching_has_no_dynamic_batcher(tiny_repo: Path) -> None:
    with TestClient(create_app(Settings(models_dir=tiny_repo, batching=False))) as client:
        config = client.get("/v2/models/tiny/config").json()

    assert config["max_batch_size"] == 1
    assert "dynamic_batching" not in config


# --- statistics ---------------------------------------------------------------------------


def test_statistics_count_images_requests_and_batches(client: TestClient) -> None:
    before = version_stats(client, "1")
    started_ms = int(time.time() * 1000)

    for _ in range(3):
        assert infer(client, 2, "/v2/models/tiny/versions/1/infer").status_code == 200

    after = version_stats(client, "1")
    assert after["inference_count"] - before["inference_count"] == 6
    # One request at a time: each ran alone, a batch of 2.
    assert after["execution_count"] - before["execution_count"] == 3
    for key in ("success", "queue", "compute_input", "compute_infer", "compute_output"):
        assert after["inference_stats"][key]["count"] - before["inference_stats"][key]["count"] == 3
    for key in ("success", "queue", "compute_infer"):
        assert after["inference_stats"][key]["ns"] > before["inference_stats"][key]["ns"]
    assert after["inference_stats"]["fail"] == before["inference_stats"]["fail"]
    # Every field of Triton's $inference_stats, as tools that read them unchecked expect.
    assert after["inference_stats"]["cache_hit"] == {"count": 0, "ns": 0}
    assert after["inference_stats"]["cache_miss"] == {"count": 0, "ns": 0}
    sizes = {stat["batch_size"]: stat for stat in after["batch_stats"]}
    old = {stat["batch_size"]: stat for stat in before["batch_stats"]}
    for key in ("compute_input", "compute_infer", "compute_output"):
        was = old[2][key]["count"] if 2 in old else 0
        assert sizes[2][key]["count"] - was == 3
    assert after["last_inference"] >= started_ms


def test_refused_requests_are_not_counted_as_inferences(client: TestClient) -> None:
    before = version_stats(client, "2")

    bad = client.post("/v2/models/tiny/infer", content=b'{"inputs": []}')

    assert bad.status_code == 400
    assert version_stats(client, "2") == before


def test_statistics_of_every_model_and_of_one(client: TestClient) -> None:
    every = client.get("/v2/models/stats").json()["model_stats"]
    tiny = client.get("/v2/models/tiny/stats").json()["model_stats"]

    assert [(stat["name"], stat["version"]) for stat in every] == [("tiny", "1"), ("tiny", "2")]
    assert [stat["version"] for stat in tiny] == ["1", "2"]


# --- model repository ---------------------------------------------------------------------


def post_json(client: TestClient, path: str, document: Any = None) -> Any:
    return client.post(path, content=b"" if document is None else orjson.dumps(document))


def states(client: TestClient, ready_only: bool = False) -> dict[str, str]:
    index = post_json(client, "/v2/repository/index", {"ready": True} if ready_only else None)
    assert index.status_code == 200
    return {f"{entry['name']}/{entry['version']}": entry["state"] for entry in index.json()}


def test_index_lists_every_version_and_its_state(client: TestClient) -> None:
    assert states(client) == {"tiny/1": "READY", "tiny/2": "READY"}


def test_unload_then_load_a_model(own_repo: Path) -> None:
    with TestClient(create_app(Settings(models_dir=own_repo, model_control=True))) as client:
        unloaded = post_json(client, "/v2/repository/models/tiny/unload", {"parameters": {}})

        assert unloaded.json() == {"name": "tiny", "state": "UNLOADED"}
        assert client.get("/v2/models/tiny/ready").status_code == 404
        assert infer(client, 1).status_code == 404
        assert infer(client, 1, "/v2/models/other/infer").status_code == 200
        assert states(client) == {"other/1": "READY", "tiny/1": "UNLOADED"}
        assert states(client, ready_only=True) == {"other/1": "READY"}

        loaded = post_json(client, "/v2/repository/models/tiny/load", {})

        assert loaded.status_code == 200
        assert loaded.json()["versions"] == ["1"]
        assert infer(client, 1).status_code == 200


def model_series(client: TestClient, model: str) -> dict[str, dict[str, float]]:
    """Every /metrics sample of ``model``, by series name, then by version."""
    series: dict[str, dict[str, float]] = {}
    for (name, label_set), value in metric_samples(client.get("/metrics").text).items():
        labels = dict(label_set)
        if labels.get("model") == model:
            series.setdefault(name, {})
            series[name][labels["version"]] = series[name].get(labels["version"], 0) + value
    return series


def test_reloading_the_same_version_keeps_it_ready_in_metrics(own_repo: Path) -> None:
    with TestClient(create_app(Settings(models_dir=own_repo, model_control=True))) as client:
        assert post_json(client, "/v2/repository/models/tiny/load").status_code == 200

        ready = model_series(client, "tiny")["mnist_serve_model_ready"]

    assert ready == {"1": 1}


def test_unloaded_model_leaves_no_series_until_it_is_loaded_again(own_repo: Path) -> None:
    with TestClient(create_app(Settings(models_dir=own_repo, model_control=True))) as client:
        assert infer(client, 1).status_code == 200
        assert post_json(client, "/v2/repository/models/tiny/unload").status_code == 200

        unloaded = model_series(client, "tiny")
        others = model_series(client, "other")
        assert post_json(client, "/v2/repository/models/tiny/load").status_code == 200
        reloaded = model_series(client, "tiny")

    assert unloaded == {}  # neither ours (mnist_serve_*) nor Triton's (nv_*)
    assert others["mnist_serve_model_ready"] == {"1": 1}
    assert others["nv_inference_request_success_total"] == {"1": 0}
    assert reloaded["mnist_serve_model_ready"] == {"1": 1}
    assert reloaded["nv_inference_count_total"] == {"1": 1}  # a counter never goes down


def test_a_version_gone_from_disk_leaves_no_series_after_a_load(own_repo: Path) -> None:
    with TestClient(create_app(Settings(models_dir=own_repo, model_control=True))) as client:
        write_tiny_model(own_repo, "tiny", version=2, seed=1)
        shutil.rmtree(own_repo / "tiny" / "1")

        assert post_json(client, "/v2/repository/models/tiny/load").status_code == 200

        series = model_series(client, "tiny")

    assert series["mnist_serve_model_ready"] == {"2": 1}
    assert {version for versions in series.values() for version in versions} == {"2"}


def test_load_picks_up_a_new_version_from_disk(own_repo: Path) -> None:
    with TestClient(create_app(Settings(models_dir=own_repo, model_control=True))) as client:
        write_tiny_model(own_repo, "tiny", version=2, seed=1)

        loaded = post_json(client, "/v2/repository/models/tiny/load")

        assert loaded.json()["versions"] == ["1", "2"]
        assert infer(client, 1).json()["model_version"] == "2"


def test_unloading_an_unloaded_model_succeeds(own_repo: Path) -> None:
    with TestClient(create_app(Settings(models_dir=own_repo, model_control=True))) as client:
        assert post_json(client, "/v2/repository/models/tiny/unload").status_code == 200

        again = post_json(client, "/v2/repository/models/tiny/unload")

        assert again.json() == {"name": "tiny", "state": "UNLOADED"}


def test_failed_load_is_400_and_keeps_serving_the_old_versions(own_repo: Path) -> None:
    with TestClient(create_app(Settings(models_dir=own_repo, model_control=True))) as client:
        broken = shutil.copytree(own_repo / "tiny" / "1", own_repo / "tiny" / "2")
        (broken / "model.onnx").write_bytes(b"truncated")

        response = post_json(client, "/v2/repository/models/tiny/load")

        assert response.status_code == 400
        assert "failed to load model 'tiny'" in response.json()["error"]
        assert infer(client, 1).json()["model_version"] == "1"
        assert states(client)["tiny/2"] == "UNAVAILABLE"


@pytest.mark.parametrize("action", ["load", "unload"])
def test_unknown_model_cannot_be_loaded_or_unloaded(client: TestClient, action: str) -> None:
    response = post_json(client, f"/v2/repository/models/nope/{action}")

    assert response.status_code == 404
    assert "'nope'" in response.json()["error"]
    settings = client.app.state.server.settings
    assert str(settings.models_dir) not in response.json()["error"]  # no server path shown


@pytest.mark.parametrize(
    ("path", "body", "expected"),
    [
        ("/v2/repository/index", b"{", "not valid JSON"),
        ("/v2/repository/index", b"[]", "JSON object"),
        ("/v2/repository/index", b'{"ready": "yes"}', "'ready'"),
        ("/v2/repository/models/tiny/load", b'{"parameters": 3}', "'parameters'"),
        (
            "/v2/repository/models/tiny/load",
            b'{"parameters": {"config": "{}"}}',
            "override config",
        ),
    ],
)
def test_malformed_repository_request_is_400(
    client: TestClient, path: str, body: bytes, expected: str
) -> None:
    response = client.post(path, content=body)

    assert response.status_code == 400
    assert expected in response.json()["error"]


def test_repository_body_over_64_kib_is_refused_unparsed(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Millions of empty arrays would take orjson seconds, holding the GIL, and a
    # repository request is a small object ({"ready": true}, {"parameters": {...}}).
    body = b'{"ready": true, "x": [' + b"[]," * 30_000 + b"[]]}"

    never_parse(monkeypatch)
    response = client.post("/v2/repository/index", content=body)

    assert response.status_code == 413
    assert "65536" in response.json()["error"]


@pytest.mark.parametrize("action", ["load", "unload"])
def test_load_and_unload_are_refused_unless_model_control_is_on(
    tiny_repo: Path, action: str
) -> None:
    with TestClient(create_app(Settings(models_dir=tiny_repo))) as client:
        response = post_json(client, f"/v2/repository/models/tiny/{action}")

        assert response.status_code == 403
        assert "--model-control" in response.json()["error"]
        assert client.get("/v2/models/tiny/ready").status_code == 200
