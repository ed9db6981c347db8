"""Pictures chosen from a file instead of drawn: PNG, SVG, a wide one, a blank one."""

from __future__ import annotations

import io

import pytest
from PIL import Image, ImageDraw
from playwright.sync_api import Page, expect

from tests.serving.web_page.helpers import (
    CANVAS_SIDE,
    DIGIT_STROKES,
    PUBLISHED,
    choose_file,
    digit_png,
    shown_labels,
    wait_for_cards,
    wait_until_settled,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_chosen_image_file_with_a_light_background_is_classified(page: Page) -> None:
    wait_for_cards(page, PUBLISHED)

    choose_file(page, "seven.png", "image/png", digit_png("7", background=255, ink=0))
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

    choose_file(page, "seven.svg", "image/svg+xml", svg.encode())
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
    choose_file(page, "wide.png", "image/png", buffer.getvalue())
    wait_until_settled(page)

    page.get_by_text("Black on white").click()
    wait_until_settled(page)

    assert shown_labels(page) == dict.fromkeys(PUBLISHED, "7")


def test_blank_image_gets_a_hint_not_an_error(page: Page) -> None:
    wait_for_cards(page, PUBLISHED)

    choose_file(page, "blank.png", "image/png", digit_png("1", background=0, ink=0))
    wait_until_settled(page)

    expect(page.locator("#status")).to_have_attribute("data-kind", "hint")
    expect(page.locator(".model-card[data-state=error]")).to_have_count(0)
