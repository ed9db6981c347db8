"""The API docs pages in a real browser: they render from the server alone, offline."""

from __future__ import annotations

import pytest
from playwright.sync_api import Browser, Route, expect

from tests.serving.web_page.helpers import TIMEOUT_MS

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.mark.parametrize(
    ("path", "title"), [("/docs", ".swagger-ui .info .title"), ("/redoc", "h1")]
)
def test_api_docs_render_without_asking_any_other_host(
    browser: Browser, published_url: str, path: str, title: str
) -> None:
    context = browser.new_context()
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    requested: list[str] = []  # what reached the network: a request the page refused did not

    def note(route: Route) -> None:
        requested.append(route.request.url)
        route.continue_()

    context.route("**/*", note)
    try:
        page.goto(published_url + path)
        expect(page.locator(title).first).to_contain_text("mnist-serve")
        expect(page.get_by_text("/v1/models/{model}/predict").first).to_be_attached()
        page.wait_for_load_state("networkidle")
        expect(page.locator("img[src^='http']")).to_have_count(0)  # no broken picture
    finally:
        context.close()

    # data: and blob: URLs are made by the page itself (an icon, a worker of the search).
    ours = (published_url, f"blob:{published_url}", "data:")
    elsewhere = [url for url in requested if not url.startswith(ours)]
    assert elsewhere == []
    assert f"{published_url}/openapi.json" in requested
