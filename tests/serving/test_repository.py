"""Model repository: discovery, versions, faults at load time, reload and unload."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import numpy as np
import pytest

from serving.card import CARD_FILE, MODEL_FILE
from serving.errors import ModelNotFound
from serving.inline_policy import ONE_CPU_INLINE_MAX_MS, SHARED_INLINE_MAX_MS
from serving.metrics import ServingMetrics
from serving.repository import ModelRepository
from serving.runtime import ModelLoadError, OnnxRuntimeModel
from serving.settings import Settings
from tests.support import tiny_logits, write_tiny_model


def repository_for(models_dir: Path, **overrides: object) -> ModelRepository:
    settings = Settings(models_dir=models_dir, max_batch_size=4, **overrides)
    return ModelRepository(settings, ServingMetrics())


def load(repository: ModelRepository) -> None:
    async def scenario() -> None:
        try:
            await repository.load_all()
        finally:
            await repository.close()

    asyncio.run(scenario())


def test_latest_version_is_served_by_default_and_others_on_request(tiny_repo: Path) -> None:
    repository = repository_for(tiny_repo)
    images = np.random.default_rng(0).random((2, 1, 28, 28), dtype=np.float32)

    async def scenario() -> tuple[np.ndarray, np.ndarray, str]:
        await repository.load_all()
        latest = repository.get("tiny")
        pinned = repository.get("tiny", "1")
        latest_out = (await latest.batcher.submit(images)).outputs
        pinned_out = (await pinned.batcher.submit(images)).outputs
        await repository.close()
        return latest_out, pinned_out, latest.version

    latest_out, pinned_out, latest_version = asyncio.run(scenario())
    assert latest_version == "2"
    assert np.allclose(latest_out, tiny_logits(images, seed=1), atol=1e-5)
    assert np.allclose(pinned_out, tiny_logits(images, seed=0), atol=1e-5)


def test_unknown_model_and_version_name_what_exists(tiny_repo: Path) -> None:
    repository = repository_for(tiny_repo)

    async def scenario() -> None:
        await repository.load_all()
        with pytest.raises(ModelNotFound, match=r"available: \['tiny'\]"):
            repository.get("nope")
        with pytest.raises(ModelNotFound, match=r"no version '9'; available: \['1', '2'\]"):
            repository.get("tiny", "9")
        await repository.close()

    asyncio.run(scenario())


def test_empty_repository_is_a_clear_startup_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="no models in"):
        load(repository_for(tmp_path))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: (d / MODEL_FILE).unlink(), "missing model.onnx"),
        (lambda d: (d / CARD_FILE).unlink(), "missing model.json"),
        (lambda d: (d / CARD_FILE).write_text("{not json"), "invalid model card"),
        (
            lambda d: (d / MODEL_FILE).write_bytes((d / MODEL_FILE).read_bytes()[:500]),
            "SHA-256 differs",
        ),
    ],
    ids=["missing-onnx", "missing-card", "bad-card", "truncated-onnx"],
)
def test_damaged_model_is_a_startup_error_naming_the_file(
    tmp_path: Path, damage: object, message: str
) -> None:
    version_dir = write_tiny_model(tmp_path, "broken")
    damage(version_dir)  # type: ignore[operator]
    with pytest.raises(ModelLoadError, match=message):
        load(repository_for(tmp_path))


def test_skip_bad_models_serves_the_good_ones_and_lists_the_bad_as_unavailable(
    tmp_path: Path,
) -> None:
    write_tiny_model(tmp_path, "good")
    broken = write_tiny_model(tmp_path, "broken")
    (broken / MODEL_FILE).write_bytes(b"garbage")
    repository = repository_for(tmp_path, skip_bad_models=True)

    async def scenario() -> list[tuple[str, str, str]]:
        await repository.load_all()
        index = [(entry.name, entry.version, entry.state) for entry in repository.index()]
        assert repository.get("good").is_ready
        with pytest.raises(ModelNotFound):
            repository.get("broken")
        await repository.close()
        return index

    assert asyncio.run(scenario()) == [("broken", "1", "UNAVAILABLE"), ("good", "1", "READY")]


def test_a_model_named_as_a_v2_route_is_refused_at_start_naming_the_route(
    tmp_path: Path,
) -> None:
    write_tiny_model(tmp_path, "stats")

    with pytest.raises(ModelLoadError, match=r"'stats' is taken by GET /v2/models/stats"):
        load(repository_for(tmp_path))


def test_skip_bad_models_lists_a_model_named_as_a_v2_route_as_unavailable(
    tmp_path: Path,
) -> None:
    write_tiny_model(tmp_path, "good")
    write_tiny_model(tmp_path, "stats")
    repository = repository_for(tmp_path, skip_bad_models=True)

    async def scenario() -> list[tuple[str, str, str]]:
        await repository.load_all()
        index = [(entry.name, entry.version, entry.state) for entry in repository.index()]
        await repository.close()
        return index

    assert asyncio.run(scenario()) == [("good", "1", "READY"), ("stats", "1", "UNAVAILABLE")]


def test_model_names_never_reach_the_file_system_as_paths(tiny_repo: Path) -> None:
    repository = repository_for(tiny_repo)

    async def scenario() -> None:
        await repository.load_all()
        for hostile in ["../tiny", "tiny/../../etc", "/etc/passwd", ".", ".."]:
            with pytest.raises(ModelNotFound):
                await repository.load(hostile)
        await repository.close()

    asyncio.run(scenario())


def test_reload_adds_a_new_version_while_in_flight_requests_finish_on_the_old(
    tmp_path: Path,
) -> None:
    write_tiny_model(tmp_path, "tiny", version=1, seed=0)
    repository = repository_for(tmp_path)
    images = np.random.default_rng(1).random((1, 1, 28, 28), dtype=np.float32)

    async def scenario() -> tuple[np.ndarray, str]:
        await repository.load_all()
        old = repository.get("tiny")
        in_flight = asyncio.ensure_future(old.batcher.submit(images))
        write_tiny_model(tmp_path, "tiny", version=2, seed=1)
        await repository.load("tiny")
        old_result = await in_flight
        new_version = repository.get("tiny").version
        await repository.close()
        return old_result.outputs, new_version

    old_outputs, new_version = asyncio.run(scenario())
    assert np.allclose(old_outputs, tiny_logits(images, seed=0), atol=1e-5)
    assert new_version == "2"


def test_unloaded_model_is_no_longer_served(tiny_repo: Path) -> None:
    repository = repository_for(tiny_repo)

    async def scenario() -> list[str]:
        await repository.load_all()
        await repository.unload("tiny")
        with pytest.raises(ModelNotFound):
            repository.get("tiny")
        states = [entry.state for entry in repository.index()]
        await repository.close()
        return states

    assert asyncio.run(scenario()) == ["UNLOADED", "UNLOADED"]


@pytest.mark.parametrize(
    ("others_in_flight", "idle_inline_max_ms", "expected_thread"),
    [(0, 10.0, "event loop"), (1, 10.0, "ORT thread"), (0, 0.0, "ORT thread")],
)
def test_a_lone_large_request_runs_on_the_event_loop_only_while_the_server_is_idle(
    tiny_repo: Path,
    monkeypatch: pytest.MonkeyPatch,
    others_in_flight: int,
    idle_inline_max_ms: float,
    expected_thread: str,
) -> None:
    threads: list[str] = []
    original_run = OnnxRuntimeModel.run

    def recording_run(self: OnnxRuntimeModel, images: np.ndarray) -> np.ndarray:
        threads.append(threading.current_thread().name)
        return original_run(self, images)

    monkeypatch.setattr(OnnxRuntimeModel, "run", recording_run)
    metrics = ServingMetrics()
    settings = Settings(
        models_dir=tiny_repo, max_batch_size=4, idle_inline_max_ms=idle_inline_max_ms
    )
    repository = ModelRepository(settings, metrics)
    images = np.random.default_rng(0).random((32, 1, 28, 28), dtype=np.float32)

    async def scenario() -> tuple[np.ndarray, str]:
        await repository.load_all()
        threads.clear()  # warm-up's runs
        metrics.requests_in_flight = 1 + others_in_flight  # this request, and the others
        outputs = (await repository.get("tiny").batcher.submit(images)).outputs
        await repository.close()
        return outputs, threading.current_thread().name

    outputs, loop_thread = asyncio.run(scenario())
    assert np.allclose(outputs, tiny_logits(images, seed=1), atol=1e-5)
    ran_on = ["event loop" if name == loop_thread else "ORT thread" for name in threads]
    assert ran_on == [expected_thread]


@pytest.mark.parametrize(
    ("cpus", "bound_ms"), [(1, ONE_CPU_INLINE_MAX_MS), (2, SHARED_INLINE_MAX_MS)]
)
def test_warm_up_bounds_event_loop_batches_by_the_cpus_a_worker_has(
    tiny_repo: Path, monkeypatch: pytest.MonkeyPatch, cpus: int, bound_ms: float
) -> None:
    monkeypatch.setattr("serving.repository.cpus_per_worker", lambda workers: cpus)
    repository = repository_for(tiny_repo)

    async def scenario() -> float:
        await repository.load_all()
        bound_s = repository.get("tiny").batcher.inline.max_s
        await repository.close()
        return bound_s

    assert asyncio.run(scenario()) == bound_ms / 1000
