"""What one load-generating process sends and expects back, built once before the load."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gevent

from loadtest.expectations import Expectation, OfflineAnswers, load_answers
from loadtest.fixtures import load_fixture
from loadtest.mix import parse_mix
from loadtest.payloads import PayloadBuilder
from loadtest.prepare import choose_models, compute_answers
from loadtest.tally import Tally

logger = logging.getLogger("loadtest")


@dataclass
class Workload:
    """What one load-generating process sends and what it expects back."""

    builder: PayloadBuilder
    labels: list[int]
    expectations: dict[str, Expectation]
    png_expectations: dict[str, Expectation]
    kinds: list[str]
    weights: list[float]
    batch_max: int
    tally: Tally = field(default_factory=Tally)
    mismatches_logged: int = 0

    @property
    def models(self) -> list[str]:
        return list(self.expectations)


def build_workload(options: Any, host: str) -> Workload:
    """The fixture's payloads and the offline answers: read from ``--offline-answers``,
    else computed here (seconds of CPU with PNGs, in a thread)."""
    fixture = load_fixture()
    kinds, weights = parse_mix(options.mix)
    if options.offline_answers:
        answers = load_answers(Path(options.offline_answers))
    else:
        requested = [name for name in options.models.split(",") if name]
        models = choose_models(host, requested, Path(options.models_dir))
        answers = _in_thread(
            compute_answers, fixture, Path(options.models_dir), models, "png" in kinds
        )
    if "png" in kinds and not answers.png:
        raise ValueError(f"{options.offline_answers} holds no PNG answers, and --mix sends PNGs")
    log_accuracy(answers, fixture.labels)
    return Workload(
        builder=PayloadBuilder(fixture.images),
        labels=fixture.labels.tolist(),
        expectations=answers.raw,
        png_expectations=answers.png,
        kinds=kinds,
        weights=weights,
        batch_max=options.batch_max,
    )


def _in_thread(function: Any, *args: Any) -> Any:
    """Run CPU-bound ``function`` in a native thread: the gevent hub keeps running, so a
    worker's heartbeats reach the master meanwhile (a worker silent for ~3 s is dropped).
    ``function`` must not log or touch gevent: its locks are the hub thread's."""
    return gevent.get_hub().threadpool.apply(function, args)


def log_accuracy(answers: OfflineAnswers, labels: Any) -> None:
    for expectation in answers.raw.values():
        logger.info(
            "offline ORT: %s v%s is %.2f%% accurate on the %d fixture images",
            expectation.model,
            expectation.version,
            100.0 * (expectation.labels == labels).mean(),
            len(labels),
        )
