"""Fixtures of the web-page tests: a headless Chromium, the servers, a fresh page.

The browser and the servers are package-scoped: the test modules share one of each (as
the single module they were split from did), so the split adds no start-up time.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from serving.card import CARD_FILE
from tests.serving.web_page.helpers import PUBLISHED, opened_page
from tests.support import PUBLISHED_MODELS, require_binary, running_server

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    chromium = require_binary("chromium")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture(scope="package")
def published_url() -> Iterator[str]:
    """A server on the real published models (what the README's screenshot shows)."""
    published = {path.parent.parent.name for path in PUBLISHED_MODELS.glob(f"*/*/{CARD_FILE}")}
    missing = set(PUBLISHED) - published
    assert not missing, f"models/ lacks {sorted(missing)}: run the training (see README)"
    with running_server(PUBLISHED_MODELS) as (url, _process):
        yield url


@pytest.fixture(scope="package")
def keyed_url(tiny_repo: Path) -> Iterator[str]:
    """A server that wants ``Authorization: Bearer sesame`` (tiny model: quick to start)."""
    with running_server(tiny_repo, env={"MNIST_SERVE_API_KEY": "sesame"}) as (url, _process):
        yield url


@pytest.fixture
def page(browser: Browser, published_url: str, request: pytest.FixtureRequest) -> Iterator[Page]:
    with opened_page(browser, published_url, request.node.name) as opened:
        yield opened
