"""What a run needs before the load starts: the models to call and their offline answers.

Both the runner (once, before Locust starts) and the locustfile (when run without the
runner) use these, so either way the answers are computed from the same code.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

from loadtest.expectations import OfflineAnswers, offline_answers
from loadtest.fixtures import Fixture
from loadtest.payloads import encode_png


def discover_models(host: str) -> list[str]:
    """Names from ``GET /v1/models``: ``{"models": [{"name": ...}, ...]}`` (or plain names)."""
    with urllib.request.urlopen(f"{host.rstrip('/')}/v1/models", timeout=10) as response:
        document = json.loads(response.read())
    entries = document.get("models", []) if isinstance(document, dict) else document
    names = [entry["name"] if isinstance(entry, dict) else str(entry) for entry in entries]
    if not names:
        raise RuntimeError(f"{host}/v1/models lists no models")
    return sorted(set(names))


def compute_answers(
    fixture: Fixture, models_dir: Path, models: list[str], with_png: bool
) -> OfflineAnswers:
    """Offline answers of ``models`` on the fixture (and its PNGs when ``with_png``)."""
    pngs = [encode_png(image) for image in fixture.images] if with_png else []
    return offline_answers(models_dir, models, fixture.pixels(), pngs)
