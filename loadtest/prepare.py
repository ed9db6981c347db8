"""What a run needs before the load starts: the models to call and their offline answers.

Both the runner (once, before Locust starts) and the locustfile (when run without the
runner) use these, so either way the answers are computed from the same code.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

from loadtest.expectations import OfflineAnswers, latest_version, offline_answers
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


class SetupError(Exception):
    """The run cannot be made; the message is one line for the person running it."""


def choose_models(host: str, requested: list[str], models_dir: Path) -> list[str]:
    """``requested`` (default: all the server lists), each served and in ``models_dir``."""
    try:
        served = discover_models(host)
    except urllib.error.URLError as error:
        raise SetupError(f"no server answering at {host} ({error.reason})") from error
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as error:
        raise SetupError(f"no model list from {host}/v1/models ({error})") from error
    models = requested or served
    missing = [model for model in models if model not in served]
    if missing:
        raise SetupError(
            f"{host} does not serve {', '.join(missing)} (it serves {', '.join(served)})"
        )
    for model in models:
        try:
            latest_version(models_dir, model)
        except FileNotFoundError as error:
            raise SetupError(
                f"no offline answers for {model}: "
                f"{models_dir / model} holds no <version>/model.onnx"
            ) from error
    return models


def compute_answers(
    fixture: Fixture, models_dir: Path, models: list[str], with_png: bool
) -> OfflineAnswers:
    """Offline answers of ``models`` on the fixture (and its PNGs when ``with_png``)."""
    pngs = [encode_png(image) for image in fixture.images] if with_png else []
    return offline_answers(models_dir, models, fixture.pixels(), pngs)
