"""Drawing a digit on the try-it page and the answers it shows: cards, Clear, touch.

Digits are drawn with mouse (and touch) strokes on the canvas, the page sends them
through the public v1 API, and the test reads what the page shows. The published
models (``models/``) must recognise a drawn "1" and "7".
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Browser, Page, Route, expect

from serving.card import CARD_FILE, ModelCard
from tests.serving.web_page.helpers import (
    CANVAS_SIDE,
    DESKTOP,
    DIGIT_STROKES,
    PHONE,
    PREDICT,
    PUBLISHED,
    canvas_to_page,
    card,
    draw,
    opened_page,
    shown_labels,
    tab_to,
    touch_draw,
    wait_for_cards,
    wait_until_settled,
)
from tests.support import PUBLISHED_MODELS

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def inked_rows(page: Page) -> tuple[float, float] | None:
    """First and last row holding any pixel unlike the top-left one (the paper), in the
    strokes' units (CANVAS_SIDE across), however many pixels the canvas has."""
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
            return first === null ? null : [first, last, canvas.width];
        }"""
    )
    if rows is None:
        return None
    unit = rows[2] / CANVAS_SIDE
    return rows[0] / unit, rows[1] / unit


def inked_columns(page: Page, first: int, last: int) -> int:
    """How many canvas pixels in columns ``first``..``last`` (the strokes' units) differ
    from the paper."""
    return page.evaluate(
        """([first, last, side]) => {
            const canvas = document.getElementById("canvas");
            const unit = canvas.width / side;
            const left = Math.floor(first * unit);
            const pixels = canvas.getContext("2d").getImageData(
                left, 0, Math.ceil((last + 1) * unit) - left, canvas.height).data;
            const paper = canvas.getContext("2d").getImageData(0, 0, 1, 1).data[0];
            let inked = 0;
            for (let i = 0; i < pixels.length; i += 4) if (pixels[i] !== paper) inked += 1;
            return inked;
        }""",
        [first, last, CANVAS_SIDE],
    )


# Installed before the page's script: every picture the page POSTs, measured.
RECORD_SENT_PICTURES = """
    window.sentPictures = [];
    const originalFetch = window.fetch;
    window.fetch = (url, options = {}) => {
        if (options.body instanceof Blob) {
            window.sentPictures.push(createImageBitmap(options.body)
                .then((bitmap) => [bitmap.width, bitmap.height]));
        }
        return originalFetch(url, options);
    };
"""


def sent_picture_sizes(page: Page) -> list[tuple[int, int]]:
    """The width and height of every picture the page has sent (``RECORD_SENT_PICTURES``)."""
    sizes = page.evaluate("() => Promise.all(window.sentPictures)")
    return [(width, height) for width, height in sizes]


def canvas_pixels(page: Page) -> dict[str, float]:
    """The canvas's own width and the device pixels it is shown across."""
    return page.evaluate(
        """() => {
            const canvas = document.getElementById("canvas");
            const shown = canvas.getBoundingClientRect().width * window.devicePixelRatio;
            return {own: canvas.width, height: canvas.height, shown: shown};
        }"""
    )


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


def test_clear_is_reachable_by_keyboard_and_resets_the_page(page: Page) -> None:
    wait_for_cards(page, PUBLISHED)
    draw(page, DIGIT_STROKES["1"])
    wait_until_settled(page)

    tab_to(page, "clear")
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


# ---------- touch ----------


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


@pytest.mark.parametrize("device_scale", [1, 2, 3])
def test_the_canvas_has_a_pixel_per_device_pixel_and_a_drawing_on_it_is_read(
    browser: Browser, published_url: str, device_scale: int
) -> None:
    # 280 canvas pixels shown across 560 device pixels (a high-DPI screen) were blurry.
    with opened_page(
        browser, published_url, f"device-scale-{device_scale}", device_scale_factor=device_scale
    ) as page:
        page.add_init_script(RECORD_SENT_PICTURES)
        page.reload()
        wait_for_cards(page, PUBLISHED)
        pixels = canvas_pixels(page)

        draw(page, DIGIT_STROKES["7"])
        wait_until_settled(page)

        assert pixels["own"] == pixels["height"] == min(round(pixels["shown"]), 1024)
        assert shown_labels(page) == dict.fromkeys(PUBLISHED, "7")
        # What is sent stays small whatever the screen: the server reads 28x28 in the end.
        assert set(sent_picture_sizes(page)) == {(280, 280)}


def test_a_drawing_is_kept_in_place_when_the_window_resizes(
    browser: Browser, published_url: str
) -> None:
    with opened_page(browser, published_url, "resized") as page:
        wait_for_cards(page, PUBLISHED)
        draw(page, DIGIT_STROKES["1"])
        wait_until_settled(page)
        before = canvas_pixels(page)
        rows = inked_rows(page)

        page.set_viewport_size(PHONE)
        page.wait_for_function(
            "side => document.getElementById('canvas').width !== side", arg=before["own"]
        )
        page.set_viewport_size(DESKTOP)
        page.wait_for_function(
            "side => document.getElementById('canvas').width === side", arg=before["own"]
        )

        assert rows == pytest.approx((40 - 10, 240 + 10), abs=3)
        assert inked_rows(page) == pytest.approx(rows, abs=3)
        assert shown_labels(page) == dict.fromkeys(PUBLISHED, "1")
