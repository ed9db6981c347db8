"""Stalled models: an ONNX Runtime call that runs far past any request's timeout.

An ORT call cannot be interrupted. When one hangs (a driver, a deadlock, a model whose
cost explodes on some input) every request for that model times out, while the process
looks healthy. :class:`StallWatchdog` checks each model's running batch on a timer:

- past ``request_timeout_s`` no request can be answered in time, so the model is
  marked not ready (its requests get 503 at once, ``/v2/health/ready`` answers 503 and
  ``mnist_serve_model_ready`` reads 0, so a load balancer stops sending and an alert
  fires) until the batch ends;
- past ``liveness_stall_s`` ``/v2/health/live`` answers 503 too, so an orchestrator
  restarts the process: the only way to get the stuck thread back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from serving.metrics import ServingMetrics
from serving.repository import ModelRepository, ServedModel

logger = logging.getLogger("mnist_serve.stall")

# A check every quarter of request_timeout_s, within these bounds: a stall is seconds
# long, a check a few microseconds, and a tiny timeout must not make the loop spin.
MIN_CHECK_INTERVAL_S = 0.01
MAX_CHECK_INTERVAL_S = 1.0


class StallWatchdog:
    """Marks models whose batch runs past ``ready_after_s`` not ready, and the process not
    live once one runs past ``live_after_s`` (0: never)."""

    def __init__(
        self,
        repository: ModelRepository,
        metrics: ServingMetrics,
        *,
        ready_after_s: float,
        live_after_s: float,
    ) -> None:
        self._repository = repository
        self._metrics = metrics
        self.ready_after_s = ready_after_s
        self.live_after_s = live_after_s
        self.interval_s = min(MAX_CHECK_INTERVAL_S, max(MIN_CHECK_INTERVAL_S, ready_after_s / 4))
        self._stalled: set[ServedModel] = set()
        self._wedged: ServedModel | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def is_live(self) -> bool:
        return self._wedged is None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._watch(), name="stall-watchdog")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            self.check()

    def check(self) -> None:
        """One look at every model's running batch."""
        models = self._repository.models()
        self._stalled.intersection_update(models)  # unloaded or replaced meanwhile
        for model in models:
            running_s = model.batcher.running_s
            if running_s > self.ready_after_s and model not in self._stalled:
                self._mark_stalled(model, running_s)
            elif running_s <= self.ready_after_s and model in self._stalled:
                self._mark_recovered(model)
        self._check_liveness()

    def _check_liveness(self) -> None:
        """Not live while any batch runs past ``live_after_s``: a version an unload or a
        reload retired counts too, since its stuck call holds its thread all the same."""
        wedged = None
        if self.live_after_s > 0:
            wedged = next(
                (
                    model
                    for model in self._repository.models_running()
                    if model.batcher.running_s > self.live_after_s
                ),
                None,
            )
        if wedged is not None and self._wedged is None:
            logger.error(
                "model %s/%s: a batch has run for %.1f s (liveness_stall_s %.1f): "
                "/v2/health/live answers 503 so that the process is restarted",
                wedged.name,
                wedged.version,
                wedged.batcher.running_s,
                self.live_after_s,
            )
        elif wedged is None and self._wedged is not None:
            logger.warning("the stalled batch ended: /v2/health/live answers 200 again")
        self._wedged = wedged

    def _mark_stalled(self, model: ServedModel, running_s: float) -> None:
        self._stalled.add(model)
        model.stalled_reason = (
            f"its ONNX Runtime call has run for over {self.ready_after_s:g} s "
            "(request_timeout_s); requests are refused until it ends"
        )
        model.is_ready = False
        self._set_gauge(model, is_ready=False)
        logger.warning(
            "model %s/%s: a batch (%d images) has run for %.1f s, past request_timeout_s "
            "(%.1f s): not ready until it ends",
            model.name,
            model.version,
            model.batcher.running_images,
            running_s,
            self.ready_after_s,
        )

    def _mark_recovered(self, model: ServedModel) -> None:
        self._stalled.discard(model)
        model.stalled_reason = None
        model.is_ready = True
        self._set_gauge(model, is_ready=True)
        logger.warning(
            "model %s/%s: the stalled batch ended; ready again", model.name, model.version
        )

    def _set_gauge(self, model: ServedModel, *, is_ready: bool) -> None:
        self._metrics.set_model_ready(
            model=model.name, version=model.version, provider=model.provider, is_ready=is_ready
        )
