"""How the page's own files are served (revalidated, 304) and the links it shows."""

from __future__ import annotations

import httpx
import pytest
from playwright.sync_api import Page, expect

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_links_lead_to_the_api_docs_and_metrics(page: Page, published_url: str) -> None:
    for path in ("/docs", "/metrics"):
        link = page.locator(f'header a[href="{path}"]')
        expect(link).to_be_visible()
        assert httpx.get(published_url + path, timeout=10).status_code == 200


@pytest.mark.parametrize("path", ["/", "/static/app.js", "/static/style.css"])
def test_page_files_are_revalidated_so_an_upgrade_is_seen_at_once(
    published_url: str, path: str
) -> None:
    response = httpx.get(published_url + path, timeout=10)

    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["etag"]
    assert response.headers["last-modified"]


@pytest.mark.parametrize("path", ["/", "/static/app.js"])
def test_unchanged_page_file_is_answered_304(published_url: str, path: str) -> None:
    etag = httpx.get(published_url + path, timeout=10).headers["etag"]

    response = httpx.get(published_url + path, headers={"If-None-Match": etag}, timeout=10)

    assert response.status_code == 304
    assert response.content == b""
    assert response.headers["cache-control"] == "no-cache"
