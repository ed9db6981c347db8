"""The model repository: find model versions on disk, load them, serve them by name.

Layout: ``<models_dir>/<name>/<version>/{model.onnx,model.json}``, versions being
integers (the highest is the default). Names from clients are only ever looked up
in the repository's own listing, never joined onto a path.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from serving.batcher import Batcher, BatcherConfig
from serving.card import CARD_FILE, MODEL_FILE, ModelCard, file_sha256
from serving.errors import ModelNotFound, ModelNotReady, quoted
from serving.inline_policy import inline_compute_max_s
from serving.metrics import ServingMetrics
from serving.runtime import (
    ModelLoadError,
    OnnxRuntimeModel,
    cpus_per_worker,
    default_intra_op_threads,
)
from serving.settings import Settings

logger = logging.getLogger("mnist_serve.repository")

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
# Names the V2 protocol's own routes take: GET /v2/models/stats is every model's
# statistics (as on Triton), so a model of that name would never get its metadata.
RESERVED_NAMES = {"stats": "GET /v2/models/stats (the statistics of every model)"}


@dataclass(eq=False)
class ServedModel:
    """One loaded model version with its session and its batcher."""

    name: str
    version: str
    card: ModelCard
    path: Path
    runtime: OnnxRuntimeModel
    batcher: Batcher
    is_ready: bool = False
    # Why a loaded version is not ready: its batch stalled (see serving.stall).
    stalled_reason: str | None = None

    @property
    def provider(self) -> str:
        return self.runtime.provider


@dataclass(frozen=True)
class IndexEntry:
    """A model version the repository knows of, loaded or not (V2 repository index)."""

    name: str
    version: str
    state: str  # READY, UNAVAILABLE, UNLOADED
    reason: str = ""


def list_version_dirs(model_dir: Path) -> list[Path]:
    """Integer-named version folders of one model, oldest first."""
    versions = [child for child in model_dir.iterdir() if child.is_dir() and child.name.isdigit()]
    return sorted(versions, key=lambda child: int(child.name))


def read_card(version_dir: Path) -> ModelCard:
    """Read and check a version's card against its folder and its ONNX file."""
    model_path = version_dir / MODEL_FILE
    if not (version_dir / CARD_FILE).is_file():
        raise ModelLoadError(f"{version_dir}: missing {CARD_FILE}")
    if not model_path.is_file():
        raise ModelLoadError(f"{version_dir}: missing {MODEL_FILE}")
    try:
        card = ModelCard.read(version_dir)
    except (ValidationError, ValueError) as error:
        raise ModelLoadError(f"{version_dir / CARD_FILE}: invalid model card: {error}") from error
    if card.name != version_dir.parent.name or str(card.version) != version_dir.name:
        raise ModelLoadError(
            f"{version_dir}: card says {card.name}/{card.version}, folder says "
            f"{version_dir.parent.name}/{version_dir.name}"
        )
    if file_sha256(model_path) != card.model_sha256:
        raise ModelLoadError(f"{model_path}: SHA-256 differs from the card's (truncated/changed?)")
    return card


class ModelRepository:
    """Every servable model version, keyed by name then version."""

    def __init__(self, settings: Settings, metrics: ServingMetrics) -> None:
        self._settings = settings
        self._metrics = metrics
        self._models: dict[str, dict[str, ServedModel]] = {}
        self._failures: dict[tuple[str, str], str] = {}
        # Versions unloaded or replaced whose queues are still draining (see _retire).
        self._retiring: set[ServedModel] = set()
        self._lock = asyncio.Lock()

    def get(self, name: str, version: str | None = None) -> ServedModel:
        """The model version to serve; the highest version when none is asked."""
        versions = self._models.get(name)
        if not versions:
            available = sorted(self._models)
            raise ModelNotFound(f"model {quoted(name)} not found; available: {available}")
        if version is None:
            model = versions[max(versions, key=int)]
        elif version in versions:
            model = versions[version]
        else:
            raise ModelNotFound(
                f"model {name!r} has no version {quoted(version)}; available: "
                f"{sorted(versions, key=int)}"
            )
        if not model.is_ready:
            because = f": {model.stalled_reason}" if model.stalled_reason else ""
            raise ModelNotReady(f"model {name!r} version {model.version} is not ready{because}")
        return model

    def models(self) -> list[ServedModel]:
        """Every loaded version, by name then version."""
        return [
            self._models[name][version]
            for name in sorted(self._models)
            for version in sorted(self._models[name], key=int)
        ]

    def models_running(self) -> list[ServedModel]:
        """Every version whose batcher may still run a batch: the loaded ones, and those an
        unload or reload retired whose queues are still draining."""
        return [*self.models(), *self._retiring]

    def names(self) -> list[str]:
        return sorted(self._models)

    @property
    def is_ready(self) -> bool:
        models = self.models()
        return bool(models) and all(model.is_ready for model in models)

    def index(self) -> list[IndexEntry]:
        """Every version on disk or loaded, with its state (V2 repository extension)."""
        entries = {
            (model.name, model.version): IndexEntry(
                model.name, model.version, "READY" if model.is_ready else "UNAVAILABLE"
            )
            for model in self.models()
        }
        for (name, version), reason in self._failures.items():
            entries[(name, version)] = IndexEntry(name, version, "UNAVAILABLE", reason)
        for model_dir in self._model_dirs():
            for version_dir in list_version_dirs(model_dir):
                key = (model_dir.name, version_dir.name)
                entries.setdefault(key, IndexEntry(*key, "UNLOADED"))
        return [entries[key] for key in sorted(entries, key=lambda key: (key[0], int(key[1])))]

    def _model_dirs(self) -> list[Path]:
        root = self._settings.models_dir
        if not root.is_dir():
            return []
        return sorted(
            child for child in root.iterdir() if child.is_dir() and _NAME.match(child.name)
        )

    def _find_model_dir(self, name: str) -> Path:
        """The folder of a model named by a client: matched in the listing, never joined."""
        for model_dir in self._model_dirs():
            if model_dir.name == name:
                return model_dir
        raise ModelNotFound(f"no model {quoted(name)} in the model repository")

    async def load_all(self) -> None:
        """Load every model found at startup; raises when nothing can be served."""
        model_dirs = self._model_dirs()
        if not model_dirs:
            raise ModelLoadError(
                f"no models in {self._settings.models_dir}: expected <name>/<version>/"
                f"{{{MODEL_FILE},{CARD_FILE}}}"
            )
        for model_dir in model_dirs:
            try:
                await self._load_model(model_dir)
            except ModelLoadError as error:
                if not self._settings.skip_bad_models:
                    raise
                logger.error("model %s unavailable: %s", model_dir.name, error)
        if not self._models:
            raise ModelLoadError(f"none of the models in {self._settings.models_dir} could load")

    async def load(self, name: str) -> None:
        """(Re)load a model from disk; in-flight requests finish on the versions they had."""
        async with self._lock:
            await self._load_model(self._find_model_dir(name))

    async def unload(self, name: str) -> None:
        """Stop serving a model: refuse new requests, finish queued ones, free its sessions."""
        async with self._lock:
            versions = self._models.pop(name, None)
            if versions is None:
                raise ModelNotFound(f"model {quoted(name)} is not loaded")
            await self._retire(versions.values())

    async def _load_model(self, model_dir: Path) -> None:
        """Load all versions of a model fully before swapping them in (never half-loaded)."""
        version_dirs = list_version_dirs(model_dir)
        if not version_dirs:
            raise ModelLoadError(f"{model_dir}: no version folders (expected {model_dir}/1/)")
        route = RESERVED_NAMES.get(model_dir.name)
        if route is not None:
            reason = f"the model name {model_dir.name!r} is taken by {route}; rename its folder"
            for version_dir in version_dirs:
                self._failures[(model_dir.name, version_dir.name)] = reason
            raise ModelLoadError(f"{model_dir}: {reason}")
        loaded: dict[str, ServedModel] = {}
        try:
            for version_dir in version_dirs:
                model = await asyncio.to_thread(self._build, version_dir)
                self._failures.pop((model.name, model.version), None)
                loaded[model.version] = model
        except ModelLoadError as error:
            self._failures[(model_dir.name, version_dir.name)] = str(error)
            raise
        for model in loaded.values():
            self._start(model)
        previous = self._models.get(model_dir.name, {})
        self._models[model_dir.name] = loaded
        await self._retire(previous.values(), replaced=loaded.keys())

    def _build(self, version_dir: Path) -> ServedModel:
        """Load, check and warm one version (blocking: runs in a thread)."""
        started = time.perf_counter()
        settings = self._settings
        card = read_card(version_dir)
        runtime = OnnxRuntimeModel(
            version_dir / MODEL_FILE,
            card,
            device=settings.device,
            intra_op_threads=settings.intra_op_threads
            or default_intra_op_threads(settings.workers),
            inter_op_threads=settings.inter_op_threads,
            graph_optimization=settings.graph_optimization,
        )
        name, version = card.name, str(card.version)
        config = BatcherConfig(
            max_batch_size=settings.max_batch_size if settings.batching else 1,
            max_queue_delay_s=settings.max_queue_delay_ms / 1000,
            max_queue_size=settings.max_queue_size,
            batching=settings.batching,
            overload_status_code=settings.overload_status_code,
        )
        batcher = Batcher(
            runtime.run,
            config,
            name=f"{name}/{version}",
            on_batch=lambda images, compute_s: self._metrics.batch_executed(
                model=name, version=version, images=images, compute_s=compute_s
            ),
            on_queue_depth=lambda images, requests: self._metrics.set_queue_depth(
                model=name, version=version, images=images, requests=requests
            ),
            # The batch's own request is in flight; any other one needs the event loop.
            is_server_idle=lambda: self._metrics.requests_in_flight <= 1,
        )
        if settings.warmup:
            warm_started = time.perf_counter()
            timings = runtime.warm_up(range(1, config.max_batch_size + 1))
            batcher.record_batch_time(timings[config.max_batch_size])
            inline = batcher.inline
            inline.max_s = inline_compute_max_s(
                settings.inline_compute_max_ms, cpus_per_worker(settings.workers)
            )
            inline.max_images = max(
                (size for size, seconds in timings.items() if seconds < inline.max_s), default=0
            )
            inline.seconds_per_image = timings[config.max_batch_size] / config.max_batch_size
            inline.idle_max_s = settings.idle_inline_max_ms / 1000
            logger.info(
                "warmed %s/%s on batch sizes 1..%d in %.3f s; batches of up to %d images run "
                "inline, and a lone request of up to %d while nothing else is in flight",
                name,
                version,
                config.max_batch_size,
                time.perf_counter() - warm_started,
                inline.max_images,
                int(inline.idle_max_s / max(inline.seconds_per_image, 1e-9)),
            )
        logger.info(
            "loaded %s/%s on %s in %.3f s",
            name,
            version,
            runtime.provider,
            time.perf_counter() - started,
        )
        return ServedModel(name, version, card, version_dir, runtime, batcher)

    def _start(self, model: ServedModel) -> None:
        model.batcher.start()
        model.is_ready = True
        self._metrics.set_model_ready(
            model=model.name, version=model.version, provider=model.provider, is_ready=True
        )

    async def _retire(self, models: Iterable[ServedModel], replaced: Iterable[str] = ()) -> None:
        """Stop serving ``models`` once their queues drain. A version in ``replaced`` has a
        new session serving already: its series (ready, as the same labels say) stay."""
        replaced_versions = set(replaced)
        retiring = list(models)
        self._retiring.update(retiring)
        try:
            for model in retiring:
                model.is_ready = False
                is_replaced = model.version in replaced_versions
                if not is_replaced:
                    self._metrics.set_model_ready(
                        model=model.name,
                        version=model.version,
                        provider=model.provider,
                        is_ready=False,
                    )
                await model.batcher.close()
                self._retiring.discard(model)
                if not is_replaced:
                    self._metrics.forget_model(model=model.name, version=model.version)
        finally:
            self._retiring.difference_update(retiring)

    async def close(self) -> None:
        """Drain and stop every model (server shutdown)."""
        async with self._lock:
            models = self.models()
            self._models.clear()
            await self._retire(models)
