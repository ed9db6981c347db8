"""The general JSON decoder: the layouts it accepts, and refusals that name the field
and what was expected."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest

from serving.codecs.v1 import decode_json_images
from serving.errors import InvalidInput
from tests.serving.codecs.v1.helpers import json_body, random_images
from tests.support import never_parse


def flat_image_with(last_value: Any) -> list[Any]:
    return [0.5] * 783 + [last_value]


# --- decode_json_images: accepted bodies ---


def test_28x28_nested_lists_decode_exactly() -> None:
    images = random_images(3)

    decoded = decode_json_images(json_body(images.tolist()), max_images=8)

    assert decoded.shape == (3, 1, 28, 28)
    assert decoded.dtype == np.float32
    np.testing.assert_array_equal(decoded[:, 0], images)


def test_flat_784_numbers_decode_exactly() -> None:
    images = random_images(2)

    decoded = decode_json_images(json_body(images.reshape(2, 784).tolist()), max_images=8)

    np.testing.assert_array_equal(decoded[:, 0], images)


def test_1x28x28_nested_lists_decode() -> None:
    images = random_images(2)

    decoded = decode_json_images(json_body(images[:, None].tolist()), max_images=8)

    np.testing.assert_array_equal(decoded[:, 0], images)


def test_integer_zeros_and_ones_are_numbers() -> None:
    decoded = decode_json_images(json_body([[0, 1] * 392]), max_images=8)

    assert decoded.reshape(784).tolist() == [0.0, 1.0] * 392


def test_true_inside_another_string_field_is_not_mistaken_for_a_pixel() -> None:
    body = orjson.dumps({"images": [[0.25] * 784], "note": "true or false, null"})

    decoded = decode_json_images(body, max_images=8)

    assert decoded.shape == (1, 1, 28, 28)


# --- decode_json_images: refusals name the field and what was expected ---


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"{", r"^body is not valid JSON: "),
        (b"", r"^body is not valid JSON: "),
        (b"\xff\xfe", r"^body is not valid JSON: "),
        (b'{"images": [[NaN]]}', r"^body is not valid JSON: "),
        (b"[]", r'^body: expected a JSON object \{"images": \[...\]\}, got a list of 0 items'),
        (b'{"instances": []}', r"^body: expected a JSON object .*got an object"),
        (b'{"images": 3}', r"^images: expected a list of images, got the number 3"),
        (b'{"images": "abc"}', r"^images: expected a list of images, got a string \('abc'\)"),
        (b'{"images": []}', r"^images: expected at least one image, got none"),
    ],
)
def test_malformed_documents_are_refused(body: bytes, expected: str) -> None:
    with pytest.raises(InvalidInput, match=expected):
        decode_json_images(body, max_images=8)


@pytest.mark.parametrize(
    ("bad_value", "described"),
    [
        (True, r"a boolean \(true\)"),
        (False, r"a boolean \(false\)"),
        (None, "null"),
        ("0.5", r"a string \('0.5'\)"),
        ("abc", r"a string \('abc'\)"),
        ({"x": 1}, "an object"),
    ],
)
def test_non_number_pixel_is_named_with_its_path(bad_value: Any, described: str) -> None:
    body = json_body([flat_image_with(0.5), flat_image_with(bad_value)])

    expected = rf"^images\[1\]\[783\]: expected a number .*{described}"
    with pytest.raises(InvalidInput, match=expected):
        decode_json_images(body, max_images=8)


def test_boolean_in_nested_image_is_refused() -> None:
    image = random_images(1)[0].tolist()
    image[27][3] = True

    with pytest.raises(InvalidInput, match=r"^images\[0\]\[27\]\[3\]: .*a boolean \(true\)"):
        decode_json_images(json_body([image]), max_images=8)


def test_ragged_rows_are_named() -> None:
    image = random_images(1)[0].tolist()
    image[5] = image[5][:27]

    with pytest.raises(
        InvalidInput,
        match=r"^images\[0\]\[5\]: is a list of 27 numbers but images\[0\]\[0\] is a list of 28",
    ):
        decode_json_images(json_body([image]), max_images=8)


@pytest.mark.parametrize(
    ("image", "got"),
    [
        ([0.5] * 783, "a list of 783 numbers"),
        ([[0.5] * 28] * 27, "nested lists of shape 27x28"),
        ([[[0.5] * 28] * 28] * 2, "nested lists of shape 2x28x28"),
        ([], "a list of 0 numbers"),
    ],
)
def test_wrong_image_shape_is_named(image: list[Any], got: str) -> None:
    with pytest.raises(
        InvalidInput, match=rf"^images\[0\]: expected 784 numbers or 28x28 nested lists, got {got}"
    ):
        decode_json_images(json_body([image]), max_images=8)


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ([0.5] * 999 + ["x"], r"images\[0\]: expected 784 .*, got a list of 1000 items$"),
        (
            [[0.5] * 28] * 27 + [[0.5] * 999 + ["x"]],
            r"images\[0\]\[27\]: is a list of 1000 items, more than any list inside an image",
        ),
    ],
)
def test_an_overlong_list_is_refused_by_its_length_unwalked(
    image: list[Any], expected: str
) -> None:
    # Its items are not looked at (a 16 MiB body holds 8 M numbers: seconds of Python),
    # so the string at its end is not what is reported.
    with pytest.raises(InvalidInput, match=rf"^{expected}"):
        decode_json_images(json_body([image]), max_images=8)


def test_unwrapped_single_image_gets_a_hint() -> None:
    with pytest.raises(InvalidInput, match=r"got the number 0.5; to send one image, wrap it"):
        decode_json_images(json_body([0.5] * 784), max_images=8)


def test_mixed_layouts_in_one_request_are_refused() -> None:
    images = random_images(2)
    body = json_body([images[0].tolist(), images[1].reshape(784).tolist()])

    expected = r"^images\[1\]: is 784 numbers but images\[0\] is 28x28"
    with pytest.raises(InvalidInput, match=expected):
        decode_json_images(body, max_images=8)


def test_too_deep_nesting_is_refused() -> None:
    with pytest.raises(InvalidInput, match=r"^images\[0\]\[0\]\[0\]\[0\]: expected a number"):
        decode_json_images(json_body([[[[[0.5]]]]]), max_images=8)


def test_out_of_range_pixel_is_named() -> None:
    with pytest.raises(InvalidInput, match=r"^images\[1\]: pixel 783 is 255; .*divide 0-255"):
        decode_json_images(json_body([flat_image_with(0.5), flat_image_with(255)]), max_images=8)


def test_number_too_large_for_float32_is_refused_without_overflow() -> None:
    expected = r"^images\[0\]: pixel 783 is 1e\+300; pixels must be in \[0, 1\]$"
    with pytest.raises(InvalidInput, match=expected):
        decode_json_images(json_body([flat_image_with(1e300)]), max_images=8)


def test_far_more_arrays_than_the_images_allowed_need_are_refused_unparsed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 8 images need at most 8 + 8 x 30 arrays (1x28x28 each): millions of empty ones take
    # orjson seconds, holding the GIL, so a body of many times that must not reach it.
    body = json_body([[[]] * 30] * 40)

    never_parse(monkeypatch)
    expected = r"^body: 1241 JSON arrays, far more than 8 images \(the limit per request\) can"
    with pytest.raises(InvalidInput, match=expected):
        decode_json_images(body, max_images=8)


@pytest.mark.parametrize(
    "values",
    [pytest.param([0] * 14_000, id="numbers"), pytest.param([{}] * 14_000, id="objects")],
)
def test_far_more_values_than_the_images_allowed_need_are_refused_unparsed(
    monkeypatch: pytest.MonkeyPatch, values: list[Any]
) -> None:
    # 8 images need at most 256 + 8 x 784 commas: 16 MiB of zeros or of {} took orjson
    # 1-2 s, holding the GIL, so a body of twice that must reach neither parser.
    body = json_body([values])

    never_parse(monkeypatch)
    expected = r"^body: 13999 commas \(JSON values\), far more than 8 images \(the limit per"
    with pytest.raises(InvalidInput, match=expected):
        decode_json_images(body, max_images=8)


def test_the_most_images_allowed_pass_the_count_of_values_in_their_longest_layout() -> None:
    images = np.full((8, 1, 28, 28), 0.5)
    body = orjson.dumps({"images": images.tolist()})

    assert decode_json_images(body, max_images=8).shape == (8, 1, 28, 28)


def test_too_many_images_names_the_limit() -> None:
    body = json_body(random_images(3).tolist())

    with pytest.raises(InvalidInput, match="3 images exceed the limit of 2 images per request"):
        decode_json_images(body, max_images=2)
