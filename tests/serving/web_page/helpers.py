"""What the web-page tests share: the page's geometry, drawing on it, reading it, faults.

Faults are simulated with Playwright's request routing on the real server. Screenshots
land in ``test-artifacts/web/`` for a human to look at.
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from PIL import Image, ImageDraw
from playwright.sync_api import Browser, Locator, Page, Route, expect

from tests.support import REPO_ROOT

ARTIFACTS = REPO_ROOT / "test-artifacts" / "web"
# Generous: two cores shared with other jobs; the page answers in milliseconds when idle.
TIMEOUT_MS = 30_000
DESKTOP = {"width": 1280, "height": 860}
PHONE = {"width": 375, "height": 667}
PUBLISHED = ("mnist_cnn", "mnist_mlp")
CANVAS_SIDE = 280  # the canvas's own pixels; strokes below are in these units

# Strokes (polylines in canvas pixels) shaped like MNIST's handwriting.
DIGIT_STROKES: dict[str, list[list[tuple[float, float]]]] = {
    "1": [[(150, 40), (140, 140), (132, 240)]],
    "7": [[(70, 55), (140, 52), (210, 55), (165, 150), (125, 240)]],
}

# Route patterns of the page's API calls, for faults simulated by routing them.
MODEL_LIST = "**/v1/models"
PREDICT = "**/v1/models/*/predict"


@contextmanager
def opened_page(browser: Browser, url: str, name: str, **context_options: Any) -> Iterator[Page]:
    """A fresh browser context on ``url``; fails on JavaScript errors; leaves a screenshot."""
    context = browser.new_context(**{"viewport": DESKTOP, **context_options})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page_errors: list[str] = []
    page.on("pageerror", lambda error: page_errors.append(str(error)))
    page.goto(url)
    try:
        yield page
        assert page_errors == [], f"JavaScript errors on the page: {page_errors}"
    finally:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
        context.close()


def stroke_points(stroke: list[tuple[float, float]], steps: int = 12) -> list[tuple[float, float]]:
    """The polyline's corners with ``steps`` evenly spaced points along each segment."""
    points = [stroke[0]]
    for (x0, y0), (x1, y1) in itertools.pairwise(stroke):
        points += [
            (x0 + (x1 - x0) * step / steps, y0 + (y1 - y0) * step / steps)
            for step in range(1, steps + 1)
        ]
    return points


def canvas_to_page(page: Page) -> Callable[[float, float], tuple[float, float]]:
    """Map canvas pixels to page coordinates, wherever and however large the canvas is shown."""
    box = page.locator("#canvas").bounding_box()
    assert box is not None
    scale = box["width"] / CANVAS_SIDE
    return lambda x, y: (box["x"] + x * scale, box["y"] + y * scale)


def draw(page: Page, strokes: list[list[tuple[float, float]]]) -> None:
    """Drag the mouse along each polyline (canvas pixels), as a person would."""
    to_page = canvas_to_page(page)
    for stroke in strokes:
        points = stroke_points(stroke)
        page.mouse.move(*to_page(*points[0]))
        page.mouse.down()
        for point in points[1:]:
            page.mouse.move(*to_page(*point))
        page.mouse.up()


def touch_draw(page: Page, strokes: list[list[tuple[float, float]]]) -> None:
    """A finger drag, through the DevTools protocol (Playwright's touchscreen only taps)."""
    to_page = canvas_to_page(page)
    session = page.context.new_cdp_session(page)
    for stroke in strokes:
        for index, point in enumerate(stroke_points(stroke)):
            x, y = to_page(*point)
            kind = "touchStart" if index == 0 else "touchMove"
            session.send(
                "Input.dispatchTouchEvent", {"type": kind, "touchPoints": [{"x": x, "y": y}]}
            )
        session.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
    session.detach()


def wait_until_settled(page: Page) -> None:
    """No request scheduled or in flight: what is shown answers the current drawing."""
    expect(page.locator("#results")).to_have_attribute("aria-busy", "false", timeout=TIMEOUT_MS)


def choose_file(page: Page, name: str, mime_type: str, content: bytes) -> None:
    """Pick one file in the page's file chooser, as a user choosing a picture would."""
    page.locator("#file-input").set_input_files(
        files=[{"name": name, "mimeType": mime_type, "buffer": content}]
    )


def tab_to(page: Page, element_id: str, presses: int = 20) -> None:
    """Press Tab until the element with ``element_id`` has the focus, as a keyboard user
    would reach it; fail if it never does."""
    for _ in range(presses):
        if page.evaluate("document.activeElement.id") == element_id:
            return
        page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == element_id, (
        f"Tab never reached #{element_id}"
    )


def card(page: Page, model: str) -> Locator:
    return page.locator(f'.model-card[data-model="{model}"]')


def shown_labels(page: Page) -> dict[str, str]:
    return {
        name: card(page, name).locator(".prediction-label").inner_text()
        for name in page.locator(".model-card").evaluate_all(
            "cards => cards.map(c => c.dataset.model)"
        )
    }


def wait_for_cards(page: Page, models: tuple[str, ...]) -> None:
    for model in models:
        expect(card(page, model)).to_be_visible(timeout=TIMEOUT_MS)


def digit_png(digit: str, *, background: int, ink: int) -> bytes:
    """The same strokes as DIGIT_STROKES, rendered by Pillow into a PNG file."""
    image = Image.new("L", (CANVAS_SIDE, CANVAS_SIDE), background)
    pen = ImageDraw.Draw(image)
    for stroke in DIGIT_STROKES[digit]:
        pen.line(stroke, fill=ink, width=CANVAS_SIDE // 14, joint="curve")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def model_of(route: Route) -> str:
    """The model a predict request is for: ``/v1/models/{model}/predict``."""
    return route.request.url.rsplit("/", 2)[-2]


def json_route_body(route: Route) -> dict[str, Any]:
    """The real server's answer to this request, as JSON."""
    return route.fetch().json()


def fail_mnist_mlp(page: Page) -> None:
    """From now on mnist_mlp's predictions answer 500; mnist_cnn's reach the server."""
    page.route(
        PREDICT,
        lambda route: (
            route.fulfill(status=500, json={"error": "internal error; see the server log"})
            if model_of(route) == "mnist_mlp"
            else route.continue_()
        ),
    )
