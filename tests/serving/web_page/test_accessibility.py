"""What a screen reader hears, contrast in both themes, and no sideways scroll on a phone."""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, Route, expect

from tests.serving.web_page.helpers import (
    DIGIT_STROKES,
    MODEL_LIST,
    PHONE,
    PREDICT,
    PUBLISHED,
    canvas_to_page,
    card,
    draw,
    fail_mnist_mlp,
    json_route_body,
    opened_page,
    stroke_points,
    tab_to,
    touch_draw,
    wait_for_cards,
    wait_until_settled,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


# ---------- what a screen reader hears ----------

RECORD_ANNOUNCEMENTS = """
    window.announcements = [];
    document.addEventListener("DOMContentLoaded", () => {
        const announcer = document.getElementById("announcer");
        new MutationObserver(() => window.announcements.push(announcer.textContent)).observe(
            announcer, { childList: true, characterData: true, subtree: true });
    });
"""


def prediction_answer(label: int, confidence: float) -> dict[str, Any]:
    """A v1 predict answer for one image, ``confidence`` on ``label``, the rest spread."""
    probabilities = [(1 - confidence) / 9] * 10
    probabilities[label] = confidence
    return {
        "predictions": [{"label": label, "confidence": confidence, "probabilities": probabilities}]
    }


def test_cards_are_not_live_regions(page: Page) -> None:
    wait_for_cards(page, PUBLISHED)

    live_in_cards = page.locator(
        ".model-card :is(output, [role=status], [role=alert], [role=log],"
        " [aria-live]:not([aria-live=off]))"
    )

    expect(live_in_cards).to_have_count(0)


def test_lifting_the_pen_is_announced_once(browser: Browser, published_url: str) -> None:
    with opened_page(browser, "about:blank", "announced-once") as page:
        page.add_init_script(RECORD_ANNOUNCEMENTS)
        page.goto(published_url)
        wait_for_cards(page, PUBLISHED)
        held: list[Route] = []
        is_holding = [True]
        page.route(
            PREDICT,
            lambda route: held.append(route) if is_holding[0] else route.continue_(),
        )
        to_page = canvas_to_page(page)
        points = stroke_points(DIGIT_STROKES["7"][0])

        # A round starts while the pen is down and lands after it lifts.
        page.mouse.move(*to_page(*points[0]))
        page.mouse.down()
        with page.expect_request(PREDICT):
            page.mouse.move(*to_page(*points[1]))
        for point in points[2:]:
            page.mouse.move(*to_page(*point))
        page.mouse.up()
        is_holding[0] = False
        for route in held:
            route.continue_()
        wait_until_settled(page)

        announcements = page.evaluate("window.announcements")
        spoken = [text for text in announcements if "predicts" in text]
        assert len(spoken) == 1, announcements


def test_announcement_and_card_give_the_same_confidence(page: Page) -> None:
    wait_for_cards(page, PUBLISHED)
    page.route(PREDICT, lambda route: route.fulfill(json=prediction_answer(7, 0.99996)))

    draw(page, DIGIT_STROKES["7"])
    wait_until_settled(page)

    expect(card(page, "mnist_cnn").locator(".prediction-confidence")).to_have_text("> 99.9 % sure")
    expect(page.locator("#announcer")).to_contain_text("mnist_cnn predicts 7, > 99.9 % sure")


def test_failure_is_announced_and_in_the_phone_summary(page: Page) -> None:
    wait_for_cards(page, PUBLISHED)
    fail_mnist_mlp(page)

    draw(page, DIGIT_STROKES["7"])
    wait_until_settled(page)

    expect(page.locator("#status")).to_have_attribute("role", "status")
    expect(page.locator("#status")).to_contain_text("internal error")
    expect(page.locator("#announcer")).to_contain_text("mnist_mlp: error")
    expect(page.locator("#announcer")).to_contain_text("mnist_cnn predicts 7")
    expect(page.locator("#quick-results")).to_have_text("mnist_cnn 7 · mnist_mlp: error")


# ---------- contrast and reflow ----------


def relative_luminance(css_colour: str) -> float:
    """WCAG 2 relative luminance of an opaque ``rgb(r, g, b)`` computed colour."""
    red, green, blue = (int(part) / 255 for part in re.findall(r"\d+", css_colour)[:3])

    def linear(channel: float) -> float:
        return channel / 12.92 if channel <= 0.03928 else ((channel + 0.055) / 1.055) ** 2.4

    return 0.2126 * linear(red) + 0.7152 * linear(green) + 0.0722 * linear(blue)


def contrast(first: str, second: str) -> float:
    lighter, darker = sorted([relative_luminance(first), relative_luminance(second)], reverse=True)
    return (lighter + 0.05) / (darker + 0.05)


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_focus_ring_bars_and_canvas_border_have_3_to_1_contrast(
    browser: Browser, published_url: str, scheme: str
) -> None:
    with opened_page(browser, published_url, f"contrast-{scheme}", color_scheme=scheme) as page:
        wait_for_cards(page, PUBLISHED)
        draw(page, DIGIT_STROKES["7"])
        wait_until_settled(page)
        tab_to(page, "clear")

        colours = page.evaluate(
            """() => {
                const style = (selector) => getComputedStyle(document.querySelector(selector));
                return {
                    panel: style(".draw-panel").backgroundColor,
                    focus: getComputedStyle(document.activeElement).outlineColor,
                    bar: style('.bar:not([data-top="true"]) .bar-fill').backgroundColor,
                    canvasBorder: style("#canvas").borderTopColor,
                };
            }"""
        )

        for part in ("focus", "bar", "canvasBorder"):
            ratio = contrast(colours[part], colours["panel"])
            assert ratio >= 3.0, f"{part} {colours[part]} on {colours['panel']}: {ratio:.2f}:1"


def test_long_model_name_does_not_make_the_phone_page_scroll_sideways(
    browser: Browser, published_url: str
) -> None:
    long_name = "mnist_cnn_distilled_quantized_int8_2026_11_30_experiment_0042"
    with opened_page(
        browser, "about:blank", "phone-long-name", viewport=PHONE, has_touch=True, is_mobile=True
    ) as page:

        def renamed(route: Route) -> None:
            body = json_route_body(route)
            body["models"][0]["name"] = long_name
            route.fulfill(json=body)

        page.route(MODEL_LIST, renamed)
        page.route(
            f"**/v1/models/{long_name}/predict",
            lambda route: route.fulfill(json=prediction_answer(1, 0.9)),
        )
        page.goto(published_url)
        wait_for_cards(page, (long_name,))

        touch_draw(page, DIGIT_STROKES["1"])
        wait_until_settled(page)

        expect(page.locator("#quick-results")).to_contain_text(long_name)
        widths = page.evaluate(
            "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
        )
        assert widths[0] <= widths[1], f"horizontal scroll: content {widths[0]} px > {widths[1]} px"
