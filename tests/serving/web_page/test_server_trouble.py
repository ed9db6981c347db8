"""The page when the server is in trouble: API keys, retries, refusals, stalls, errors.

Faults are simulated with Playwright's request routing on the real server.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Browser, Page, Route, expect

from tests.serving.web_page.helpers import (
    DIGIT_STROKES,
    MODEL_LIST,
    PREDICT,
    PUBLISHED,
    TIMEOUT_MS,
    card,
    choose_file,
    digit_png,
    draw,
    fail_mnist_mlp,
    json_route_body,
    model_of,
    opened_page,
    shown_labels,
    wait_for_cards,
    wait_until_settled,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


# ---------- a server that wants an API key ----------


def test_api_key_prompt_appears_on_401_and_the_key_unlocks_predictions(
    browser: Browser, keyed_url: str
) -> None:
    with opened_page(browser, keyed_url, "api-key") as keyed_page:
        sent_keys: list[str | None] = []
        keyed_page.on(
            "request",
            lambda request: (
                sent_keys.append(request.headers.get("authorization"))
                if "/predict" in request.url
                else None
            ),
        )
        expect(keyed_page.locator("#key-panel")).to_be_visible()
        expect(keyed_page.locator("#status")).to_have_attribute("data-kind", "error")

        keyed_page.get_by_role("textbox", name="API key").fill("sesame")
        keyed_page.get_by_role("button", name="Use key").click()
        wait_for_cards(keyed_page, ("tiny",))
        draw(keyed_page, DIGIT_STROKES["7"])
        wait_until_settled(keyed_page)

        expect(keyed_page.locator("#key-panel")).to_be_hidden()
        expect(card(keyed_page, "tiny")).to_have_attribute("data-state", "done")
        assert re.fullmatch(r"[0-9]", shown_labels(keyed_page)["tiny"])
        assert sent_keys, "no predict request was sent"
        assert set(sent_keys) == {"Bearer sesame"}


def test_refused_api_key_is_said_so_and_forgotten(browser: Browser, keyed_url: str) -> None:
    with opened_page(browser, keyed_url, "api-key-refused") as keyed_page:
        expect(keyed_page.locator("#key-panel")).to_be_visible()

        keyed_page.get_by_role("textbox", name="API key").fill("open-sesame")
        keyed_page.get_by_role("button", name="Use key").click()

        expect(keyed_page.locator("#key-message")).to_contain_text("That key was refused")
        expect(keyed_page.locator("#key-panel")).to_be_visible()
        assert keyed_page.evaluate("sessionStorage.length") == 0
        keyed_page.get_by_role("textbox", name="API key").fill("sesame")
        keyed_page.get_by_role("button", name="Use key").click()
        wait_for_cards(keyed_page, ("tiny",))
        expect(keyed_page.locator("#key-panel")).to_be_hidden()


# ---------- a model list or a prediction that fails or stalls ----------


def test_model_list_that_failed_at_load_is_retried_and_then_predicts(
    browser: Browser, published_url: str
) -> None:
    with opened_page(browser, "about:blank", "model-list-retried") as page:
        is_down = [True]

        def model_list(route: Route) -> None:
            if is_down[0]:
                route.fulfill(status=502, body="<html>Bad Gateway</html>", content_type="text/html")
            else:
                route.continue_()

        page.route(MODEL_LIST, model_list)
        page.goto(published_url)
        expect(page.locator("#status")).to_have_attribute("data-kind", "error")

        draw(page, DIGIT_STROKES["7"])
        expect(page.locator("#status")).to_contain_text("trying again", timeout=TIMEOUT_MS)
        expect(page.locator("#results")).to_have_attribute("aria-busy", "true")
        is_down[0] = False
        wait_until_settled(page)

        assert shown_labels(page) == dict.fromkeys(PUBLISHED, "7")


def test_model_not_found_refreshes_the_model_list(page: Page) -> None:
    wait_for_cards(page, PUBLISHED)
    # The server restarted without mnist_mlp: it answers 404 and lists only mnist_cnn.
    page.route(
        PREDICT,
        lambda route: (
            route.fulfill(
                status=404,
                json={"error": "model 'mnist_mlp' not found; available: ['mnist_cnn']"},
            )
            if model_of(route) == "mnist_mlp"
            else route.continue_()
        ),
    )

    def fewer_models(route: Route) -> None:
        body = json_route_body(route)
        body["models"] = [entry for entry in body["models"] if entry["name"] != "mnist_mlp"]
        route.fulfill(json=body)

    page.route(MODEL_LIST, fewer_models)

    draw(page, DIGIT_STROKES["7"])

    expect(card(page, "mnist_mlp")).to_have_count(0, timeout=TIMEOUT_MS)
    expect(card(page, "mnist_cnn").locator(".prediction-label")).to_have_text(
        "7", timeout=TIMEOUT_MS
    )
    wait_until_settled(page)
    expect(page.locator("#status")).not_to_have_attribute("data-kind", "error")


def test_status_counts_only_ready_models(browser: Browser, published_url: str) -> None:
    with opened_page(browser, "about:blank", "ready-count") as page:

        def one_not_ready(route: Route) -> None:
            body = json_route_body(route)
            for entry in body["models"]:
                entry["ready"] = entry["name"] != "mnist_mlp"
            route.fulfill(json=body)

        page.route(MODEL_LIST, one_not_ready)
        page.goto(published_url)

        expect(page.locator("#status")).to_have_text(re.compile(r"^1 of 2 models ready\b"))


def test_stalled_round_says_it_is_waiting_then_times_out(
    browser: Browser, published_url: str
) -> None:
    with opened_page(browser, "about:blank", "stalled-round") as page:
        page.clock.install()  # the page's timers, fast-forwarded below instead of waited for
        page.goto(published_url)
        wait_for_cards(page, PUBLISHED)
        page.route(PREDICT, lambda route: None)  # never answered

        draw(page, DIGIT_STROKES["7"])
        page.clock.fast_forward(2_000)
        expect(page.locator("#status")).to_contain_text("Waiting for the server")
        page.clock.fast_forward(30_000)

        wait_until_settled(page)
        for model in PUBLISHED:
            expect(card(page, model)).to_have_attribute("data-state", "error")
            expect(card(page, model).locator(".model-error")).to_contain_text("No answer")


def test_error_card_drops_the_previous_answers_bars(page: Page) -> None:
    wait_for_cards(page, PUBLISHED)
    draw(page, DIGIT_STROKES["7"])
    wait_until_settled(page)
    fail_mnist_mlp(page)

    draw(page, DIGIT_STROKES["1"])
    wait_until_settled(page)

    failed = card(page, "mnist_mlp")
    expect(failed).to_have_attribute("data-state", "error")
    expect(failed.locator('.bar[data-top="true"]')).to_have_count(0)
    heights = failed.locator(".bar-fill").evaluate_all("fills => fills.map(f => f.style.height)")
    assert [float(height.removesuffix("%")) for height in heights] == [0.0] * 10


# ---------- refusals ----------


def refuse_mnist_mlp(page: Page, refusals: int) -> list[str]:
    """Answer mnist_mlp's first ``refusals`` predicts 429 with Retry-After: 1; the rest go
    through. Returns the models of the predicts sent, as they are sent."""
    sent: list[str] = []

    def route_predict(route: Route) -> None:
        model = model_of(route)
        sent.append(model)
        if model == "mnist_mlp" and sent.count(model) <= refusals:
            route.fulfill(
                status=429, json={"error": "too many requests"}, headers={"Retry-After": "1"}
            )
        else:
            route.continue_()

    page.route(PREDICT, route_predict)
    return sent


def choose_seven(page: Page) -> None:
    """One round of predicts, for a picture of a 7 (a drawing sends several)."""
    choose_file(page, "7.png", "image/png", digit_png("7", background=0, ink=255))


def test_refused_last_round_is_retried_after_retry_after(page: Page) -> None:
    wait_for_cards(page, PUBLISHED)
    sent = refuse_mnist_mlp(page, refusals=1)

    choose_seven(page)

    expect(card(page, "mnist_mlp")).to_have_attribute("data-state", "done", timeout=TIMEOUT_MS)
    wait_until_settled(page)
    assert shown_labels(page) == dict.fromkeys(PUBLISHED, "7")
    assert sent.count("mnist_mlp") == 2
    assert sent.count("mnist_cnn") == 1, "the model that answered was asked again"


def test_refusal_is_retried_only_once_per_drawing(page: Page) -> None:
    wait_for_cards(page, PUBLISHED)
    sent = refuse_mnist_mlp(page, refusals=1_000)

    choose_seven(page)
    expect(page.locator("#results")).to_have_attribute("aria-busy", "true")
    wait_until_settled(page)

    expect(card(page, "mnist_mlp")).to_have_attribute("data-state", "error")
    assert sent.count("mnist_mlp") == 2
