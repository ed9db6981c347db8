"""The try-it page at ``/``, in a real headless Chromium against a real server.

Digits are drawn with mouse (and touch) strokes on the canvas, the page sends
them through the public v1 API, and the test reads what the page shows. The
published models (``models/``) must recognise a drawn "1" and "7".
Screenshots land in ``test-artifacts/web/`` for a human to look at.
"""

from __future__ import annotations

import io
import re
from typing import Any

import httpx
import pytest
from PIL import Image, ImageDraw
from playwright.sync_api import Browser, Page, Route, expect

from serving.card import CARD_FILE, ModelCard
from tests.serving.web_page.helpers import (
    CANVAS_SIDE,
    DIGIT_STROKES,
    MODEL_LIST,
    PHONE,
    PREDICT,
    PUBLISHED,
    TIMEOUT_MS,
    canvas_to_page,
    card,
    digit_png,
    draw,
    fail_mnist_mlp,
    json_route_body,
    model_of,
    opened_page,
    shown_labels,
    stroke_points,
    touch_draw,
    wait_for_cards,
    wait_until_settled,
)
from tests.support import PUBLISHED_MODELS

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def inked_rows(page: Page) -> tuple[int, int] | None:
    """First and last canvas row holding any pixel unlike the top-left one (the paper)."""
    rows = page.evaluate(
        """() => {
            const canvas = document.getElementById("canvas");
            const context = canvas.getContext("2d");
            const pixels = context.getImageData(0, 0, canvas.width, canvas.height).data;
            let first = null, last = null;
            for (let i = 0; i < pixels.length; i += 4) {
                if (pixels[i] === pixels[0]) continue;
                const row = Math.floor(i / 4 / canvas.width);
                if (first === null) first = row;
                last = row;
            }
            return first === null ? null : [first, last];
        }"""
    )
    return None if rows is None else (rows[0], rows[1])


# ---------- the page on the published models ----------


def test_page_shows_a_card_per_published_model_with_version_and_accuracy(page: Page) -> None:
    wait_for_cards(page, PUBLISHED)

    for model in PUBLISHED:
        latest = max(
            (path.parent for path in (PUBLISHED_MODELS / model).glob(f"*/{CARD_FILE}")),
            key=lambda path: int(path.name),
        )
        model_card = ModelCard.read(latest)
        accuracy = model_card.metrics["test_accuracy_onnxruntime"]
        expect(card(page, model).locator(".model-version")).to_have_text(f"v{model_card.version}")
        expect(card(page, model).locator(".model-accuracy")).to_have_text(f"{accuracy * 100:.2f} %")


@pytest.mark.parametrize("digit", ["1", "7"])
def test_drawn_digit_is_recognised_by_every_model(page: Page, digit: str) -> None:
    wait_for_cards(page, PUBLISHED)

    draw(page, DIGIT_STROKES[digit])
    wait_until_settled(page)

    assert shown_labels(page) == dict.fromkeys(PUBLISHED, digit)
    for model in PUBLISHED:
        model_card = card(page, model)
        expect(model_card.locator(".latency-round-trip")).to_have_text(
            re.compile(r"^\d+ ms round trip$")
        )
        expect(model_card.locator(f".bar:nth-child({int(digit) + 1})")).to_have_attribute(
            "data-top", "true"
        )
        expect(page.locator("#announcer")).to_contain_text(f"{model} predicts {digit}")


def test_chosen_image_file_with_a_light_background_is_classified(page: Page) -> None:
    wait_for_cards(page, PUBLISHED)

    page.locator("#file-input").set_input_files(
        files=[
            {
                "name": "seven.png",
                "mimeType": "image/png",
                "buffer": digit_png("7", background=255, ink=0),
            }
        ]
    )
    wait_until_settled(page)

    assert shown_labels(page) == dict.fromkeys(PUBLISHED, "7")


def test_chosen_svg_is_drawn_on_the_canvas_and_sent_as_png(page: Page) -> None:
    wait_for_cards(page, PUBLISHED)
    sent_types: list[str | None] = []
    page.on(
        "request",
        lambda request: (
            sent_types.append(request.headers.get("content-type"))
            if request.url.endswith("/predict")
            else None
        ),
    )
    points = " ".join(f"{x},{y}" for x, y in DIGIT_STROKES["7"][0])
    svg = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{CANVAS_SIDE}" height="{CANVAS_SIDE}">'
        f'<rect width="100%" height="100%" fill="white"/><polyline points="{points}"'
        f' fill="none" stroke="black" stroke-width="{CANVAS_SIDE // 14}"'
        ' stroke-linecap="round" stroke-linejoin="round"/></svg>'
    )

    page.locator("#file-input").set_input_files(
        files=[{"name": "seven.svg", "mimeType": "image/svg+xml", "buffer": svg.encode()}]
    )
    wait_until_settled(page)

    assert shown_labels(page) == dict.fromkeys(PUBLISHED, "7")
    assert sent_types, "nothing was sent"
    assert set(sent_types) == {"image/png"}


def test_wide_light_picture_is_still_read_after_switching_ink(page: Page) -> None:
    wait_for_cards(page, PUBLISHED)
    wide = Image.new("L", (CANVAS_SIDE, CANVAS_SIDE // 2), 255)
    pen = ImageDraw.Draw(wide)
    for stroke in DIGIT_STROKES["7"]:
        half = [(70 + x / 2, y / 2) for x, y in stroke]
        pen.line(half, fill=0, width=CANVAS_SIDE // 28, joint="curve")
    buffer = io.BytesIO()
    wide.save(buffer, format="PNG")
    page.locator("#file-input").set_input_files(
        files=[{"name": "wide.png", "mimeType": "image/png", "buffer": buffer.getvalue()}]
    )
    wait_until_settled(page)

    page.get_by_text("Black on white").click()
    wait_until_settled(page)

    assert shown_labels(page) == dict.fromkeys(PUBLISHED, "7")


def test_blank_image_gets_a_hint_not_an_error(page: Page) -> None:
    wait_for_cards(page, PUBLISHED)

    page.locator("#file-input").set_input_files(
        files=[
            {
                "name": "blank.png",
                "mimeType": "image/png",
                "buffer": digit_png("1", background=0, ink=0),
            }
        ]
    )
    wait_until_settled(page)

    expect(page.locator("#status")).to_have_attribute("data-kind", "hint")
    expect(page.locator(".model-card[data-state=error]")).to_have_count(0)


def test_clear_is_reachable_by_keyboard_and_resets_the_page(page: Page) -> None:
    wait_for_cards(page, PUBLISHED)
    draw(page, DIGIT_STROKES["1"])
    wait_until_settled(page)

    for _ in range(20):
        if page.evaluate("document.activeElement.id") == "clear":
            break
        page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "clear", "Tab never reached Clear"
    page.keyboard.press("Enter")

    assert inked_rows(page) is None
    assert shown_labels(page) == dict.fromkeys(PUBLISHED, "–")


def test_escape_clears_the_canvas(page: Page) -> None:
    wait_for_cards(page, PUBLISHED)
    draw(page, DIGIT_STROKES["7"])
    wait_until_settled(page)

    page.keyboard.press("Escape")

    assert inked_rows(page) is None
    assert shown_labels(page) == dict.fromkeys(PUBLISHED, "–")


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


def test_phone_viewport_stacks_without_horizontal_scroll_and_takes_touch(
    browser: Browser, published_url: str
) -> None:
    with opened_page(
        browser, published_url, "phone", viewport=PHONE, has_touch=True, is_mobile=True
    ) as phone_page:
        wait_for_cards(phone_page, PUBLISHED)

        widths = phone_page.evaluate(
            "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
        )
        assert widths[0] <= widths[1], f"horizontal scroll: content {widths[0]} px > {widths[1]} px"
        canvas_box = phone_page.locator("#canvas").bounding_box()
        results_box = phone_page.locator("#results").bounding_box()
        assert canvas_box is not None
        assert results_box is not None
        assert canvas_box["x"] >= 0
        assert canvas_box["x"] + canvas_box["width"] <= PHONE["width"]
        assert results_box["y"] > canvas_box["y"] + canvas_box["height"], "layout did not stack"

        touch_draw(phone_page, DIGIT_STROKES["1"])
        wait_until_settled(phone_page)

        # The whole stroke is on the canvas: the browser did not take the drag for a scroll.
        assert inked_rows(phone_page) == pytest.approx((40 - 10, 240 + 10), abs=3)
        assert shown_labels(phone_page) == dict.fromkeys(PUBLISHED, "1")


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


# ---------- faults, simulated with Playwright request routing on the real server ----------


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


def test_clear_abandons_a_stalled_round(page: Page) -> None:
    wait_for_cards(page, PUBLISHED)
    stalled: list[Route] = []
    is_stalling = [True]

    def stall_until_cleared(route: Route) -> None:
        if is_stalling[0]:
            stalled.append(route)  # never answered
        else:
            route.continue_()

    page.route(PREDICT, stall_until_cleared)
    draw(page, DIGIT_STROKES["1"])
    expect(page.locator("#results")).to_have_attribute("aria-busy", "true")

    page.get_by_role("button", name="Clear").click()
    is_stalling[0] = False
    draw(page, DIGIT_STROKES["7"])
    wait_until_settled(page)

    assert stalled, "no request was held"
    assert shown_labels(page) == dict.fromkeys(PUBLISHED, "7")


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


# ---------- touch ----------


def inked_columns(page: Page, first: int, last: int) -> int:
    """How many canvas pixels in columns ``first``..``last`` differ from the paper."""
    return page.evaluate(
        """([first, last]) => {
            const canvas = document.getElementById("canvas");
            const pixels = canvas.getContext("2d").getImageData(
                first, 0, last - first + 1, canvas.height).data;
            const paper = canvas.getContext("2d").getImageData(0, 0, 1, 1).data[0];
            let inked = 0;
            for (let i = 0; i < pixels.length; i += 4) if (pixels[i] !== paper) inked += 1;
            return inked;
        }""",
        [first, last],
    )


def test_two_fingers_draw_no_line_between_them(browser: Browser, published_url: str) -> None:
    with opened_page(
        browser, published_url, "two-fingers", viewport=PHONE, has_touch=True, is_mobile=True
    ) as page:
        wait_for_cards(page, PUBLISHED)
        to_page = canvas_to_page(page)
        session = page.context.new_cdp_session(page)

        for step in range(13):  # two fingers down together, both dragged from top to bottom
            y = 40 + step * 15
            fingers = [
                {"x": x, "y": page_y, "id": index}
                for index, (x, page_y) in enumerate([to_page(60, y), to_page(220, y)])
            ]
            kind = "touchStart" if step == 0 else "touchMove"
            session.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": fingers})
        session.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
        session.detach()
        wait_until_settled(page)

        assert inked_columns(page, 40, 80) > 0, "the first finger drew nothing"
        assert inked_columns(page, 100, 180) == 0, "a line was drawn between the fingers"


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
    page.locator("#file-input").set_input_files(
        files=[
            {
                "name": "7.png",
                "mimeType": "image/png",
                "buffer": digit_png("7", background=0, ink=255),
            }
        ]
    )


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


# ---------- contrast ----------


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
        for _ in range(20):
            if page.evaluate("document.activeElement.id") == "clear":
                break
            page.keyboard.press("Tab")

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


# Count the page's predict calls, and hold every canvas encoding until the test lets go.
HOLD_ENCODING = """() => {
  window.predictCalls = 0;
  const realFetch = window.fetch;
  window.fetch = (url, ...rest) => {
    if (String(url).includes("/predict")) window.predictCalls += 1;
    return realFetch(url, ...rest);
  };
  window.heldEncodings = [];
  HTMLCanvasElement.prototype.toBlob = function (callback) { window.heldEncodings.push(callback); };
}"""
# Finish the held encodings, let their promise chains run (one task later), and count.
RELEASE_ENCODING = """async () => {
  const png = new Blob([new Uint8Array([137, 80, 78, 71])], { type: "image/png" });
  window.heldEncodings.splice(0).forEach((callback) => callback(png));
  await new Promise((resolve) => setTimeout(resolve, 0));
  return window.predictCalls;
}"""


def test_a_round_cleared_while_its_drawing_is_encoded_sends_nothing(page: Page) -> None:
    wait_for_cards(page, PUBLISHED)
    page.evaluate(HOLD_ENCODING)
    draw(page, DIGIT_STROKES["1"])
    page.wait_for_function("() => window.heldEncodings.length > 0")

    page.get_by_role("button", name="Clear").click()

    assert page.evaluate(RELEASE_ENCODING) == 0
