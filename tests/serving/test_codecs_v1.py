"""The v1 wire formats: JSON and octet-stream images in, JSON predictions out."""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from serving.codecs.v1 import (
    _plain_flat_images,
    decode_json_images,
    decode_octet_images,
    encode_octet_images,
    encode_predictions,
    encode_probabilities,
    labels_of,
    softmax,
)
from serving.errors import InvalidInput
from tests.support import ExampleTally


def random_images(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((count, 28, 28)).astype(np.float32)


def json_body(images: Any) -> bytes:
    return orjson.dumps({"images": images})


def flat_image_with(last_value: Any) -> list[Any]:
    return [0.5] * 783 + [last_value]


def exact_bytes(length: int) -> st.SearchStrategy[bytes]:
    return st.binary(min_size=length, max_size=length)


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

    def unparsed(document: bytes) -> Any:
        raise AssertionError("parsed")

    monkeypatch.setattr(orjson, "loads", unparsed)
    expected = r"^body: 1241 JSON arrays, far more than 8 images \(the limit per request\) can"
    with pytest.raises(InvalidInput, match=expected):
        decode_json_images(body, max_images=8)


def test_too_many_images_names_the_limit() -> None:
    body = json_body(random_images(3).tolist())

    with pytest.raises(InvalidInput, match="3 images exceed the limit of 2 images per request"):
        decode_json_images(body, max_images=2)


json_values = st.recursive(
    # orjson writes integers within 64 bits only.
    st.none()
    | st.booleans()
    | st.floats()
    | st.integers(-(2**63), 2**64 - 1)
    | st.text(max_size=3),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children),
    max_leaves=20,
)


@settings(deadline=None)  # wall-clock limits are flaky on a shared machine
@given(st.binary(max_size=2000))
def test_any_bytes_decode_or_are_invalid_input(body: bytes) -> None:
    with contextlib.suppress(InvalidInput):
        decode_json_images(body, max_images=4)


def json_images(shape: tuple[int, ...]) -> st.SearchStrategy[list[Any]]:
    """Images of ``shape`` as nested lists of pixels in [0, 1] (floats, or 0 and 1)."""
    pixels = st.floats(0, 1) | st.integers(0, 1)
    return hnp.arrays(np.float64, shape, elements=pixels).map(np.ndarray.tolist)


# Lists of 0-5 images of one layout with pixels in [0, 1] (valid ones, when 1-4), or of
# any values, or images and any values mixed.
json_images_lists = (
    st.tuples(st.integers(0, 5), st.sampled_from([(784,), (28, 28)])).flatmap(
        lambda spec: st.lists(json_images(spec[1]), min_size=spec[0], max_size=spec[0])
    )
    | st.lists(json_values, max_size=4)
    | st.lists(json_images((784,)) | json_values, max_size=4)
)


def test_any_json_images_list_decodes_or_is_invalid_input() -> None:
    tally = ExampleTally()

    @settings(deadline=None)  # wall-clock limits are flaky on a shared machine
    @given(json_images_lists)
    def check(images: list[Any]) -> None:
        decoded = tally.decoded(decode_json_images, json_body(images), max_images=4)
        if decoded is None:
            return
        assert decoded.shape == (len(images), 1, 28, 28)
        assert len(decoded) in range(1, 5)
        assert decoded.dtype == np.float32
        assert {type(pixel) for pixel in np.array(images, dtype=object).flat} <= {int, float}
        np.testing.assert_array_equal(
            decoded.reshape(len(images), 784),
            np.array(images, dtype=np.float32).reshape(len(images), 784),
        )

    check()
    tally.assert_both_at_least(0.1)


@settings(deadline=None)  # wall-clock limits are flaky on a shared machine
@given(st.integers(0, 27), st.integers(0, 27), json_values, st.booleans())
def test_one_bad_pixel_anywhere_is_decoded_only_if_it_is_a_valid_number(
    row: int, column: int, value: Any, is_flat: bool
) -> None:
    image: list[Any] = [[0.5] * 28 for _ in range(28)]
    image[row][column] = value
    body = json_body([[pixel for pixels in image for pixel in pixels] if is_flat else image])
    is_valid_pixel = type(value) in (int, float) and 0 <= value <= 1

    if is_valid_pixel:
        assert decode_json_images(body, max_images=4)[0, 0, row, column] == np.float32(value)
    else:
        with pytest.raises(InvalidInput, match=r"^images\[0\]"):
            decode_json_images(body, max_images=4)


@settings(deadline=None)  # wall-clock limits are flaky on a shared machine
@given(
    hnp.arrays(
        np.float32, st.tuples(st.integers(1, 4), st.just(784)), elements=st.floats(0, 1, width=32)
    )
)
def test_json_round_trips_float32_pixels(images: np.ndarray) -> None:
    decoded = decode_json_images(json_body(images.tolist()), max_images=4)

    np.testing.assert_array_equal(decoded.reshape(-1, 784), images)


# --- octet-stream ---


def test_octet_pixels_are_scaled_to_0_1() -> None:
    pixels = np.arange(784 * 2, dtype=np.uint32).astype(np.uint8).reshape(2, 784)

    decoded = decode_octet_images(pixels.tobytes(), max_images=8)

    assert decoded.shape == (2, 1, 28, 28)
    assert decoded.dtype == np.float32
    np.testing.assert_allclose(decoded.reshape(2, 784), pixels / 255.0, rtol=1e-6)
    assert decoded.max() == 1.0


@pytest.mark.parametrize("length", [0, 1, 783, 785, 784 * 2 + 1])
def test_octet_length_not_a_positive_multiple_of_784_is_refused(length: int) -> None:
    with pytest.raises(InvalidInput, match=rf"positive multiple of 784 bytes .*got {length} bytes"):
        decode_octet_images(b"\x00" * length, max_images=8)


def test_octet_too_many_images_names_the_limit() -> None:
    with pytest.raises(InvalidInput, match="3 images exceed the limit of 2"):
        decode_octet_images(b"\x00" * 784 * 3, max_images=2)


def test_any_bytes_decode_as_octet_or_are_invalid_input() -> None:
    tally = ExampleTally()

    @settings(deadline=None)  # wall-clock limits are flaky on a shared machine
    # Any length, or as often a multiple of 784 (0 to 5 images).
    @given(
        st.binary(max_size=784 * 5) | st.integers(0, 5).map(lambda n: 784 * n).flatmap(exact_bytes)
    )
    def check(body: bytes) -> None:
        decoded = tally.decoded(decode_octet_images, body, max_images=4)
        if decoded is None:
            return
        assert decoded.shape == (len(body) // 784, 1, 28, 28)
        assert len(decoded) in range(1, 5)
        np.testing.assert_array_equal(
            decoded.reshape(-1), np.frombuffer(body, np.uint8) / np.float32(255)
        )

    check()
    tally.assert_both_at_least(0.1)


@settings(deadline=None)  # wall-clock limits are flaky on a shared machine
@given(st.integers(1, 4).map(lambda count: 784 * count).flatmap(exact_bytes))
def test_octet_round_trips(body: bytes) -> None:
    assert encode_octet_images(decode_octet_images(body, max_images=4)) == body


# --- predictions ---


def test_predictions_hold_label_confidence_and_probabilities() -> None:
    logits = np.array([[0.0] * 7 + [5.0, 0.0, 0.0], [9.0] + [0.0] * 9], dtype=np.float32)

    document = orjson.loads(encode_predictions("mnist_cnn", "3", logits))

    assert document["model"] == "mnist_cnn"
    assert document["version"] == "3"
    labels = [prediction["label"] for prediction in document["predictions"]]
    assert labels == [7, 0]
    first = document["predictions"][0]
    expected = np.exp(logits[0]) / np.exp(logits[0]).sum()
    np.testing.assert_allclose(first["probabilities"], expected, rtol=1e-6)
    assert first["confidence"] == pytest.approx(expected[7], rel=1e-6)
    assert sum(first["probabilities"]) == pytest.approx(1.0, abs=1e-6)


def test_softmax_of_huge_logits_does_not_overflow() -> None:
    probabilities = softmax(np.array([[1000.0, 999.0, -1000.0]], dtype=np.float32))

    assert np.isfinite(probabilities).all()
    np.testing.assert_allclose(probabilities[0, :2], [0.7310586, 0.2689414], rtol=1e-5)


@settings(max_examples=50, deadline=None)
@given(
    logits=hnp.arrays(
        np.float32,
        st.tuples(st.integers(1, 64), st.just(10)),
        elements=st.floats(-50, 50, width=32),
    ),
    data=st.data(),
)
def test_a_requests_answer_is_the_same_bytes_whether_its_batch_is_encoded_whole_or_alone(
    logits: np.ndarray, data: st.DataObject
) -> None:
    start = data.draw(st.integers(0, len(logits) - 1))
    stop = data.draw(st.integers(start + 1, len(logits)))
    probabilities, labels = softmax(logits), labels_of(logits)

    from_batch = encode_probabilities("m", "1", probabilities[start:stop], labels[start:stop])

    assert from_batch == encode_predictions("m", "1", logits[start:stop])


def general_decode(body: bytes) -> np.ndarray:
    """What the general decoder (orjson, then numpy) makes of the images."""
    return np.array(orjson.loads(body)["images"], dtype=np.float64)


def test_the_usual_body_takes_the_direct_parse_to_the_same_numbers() -> None:
    images = random_images(3).reshape(3, 784)
    body = json_body(images.tolist())

    parsed = _plain_flat_images(body)

    assert parsed is not None
    np.testing.assert_array_equal(parsed, general_decode(body))


ONE_IMAGE = [0.25] * 784
# Raw JSON put in place of one pixel.
SPOILERS = [
    b"true",
    b"false",
    b"null",
    b'"0.5"',
    b'{"x": 1}',
    b"[0.5]",
    b"[]",
    b"[[0.5]]",
    b"18446744073709551616",
    b"1e400",
    b"-0",
    b"-1",
    b"7",
    b"1e300",
]


@pytest.mark.parametrize("spoiler", SPOILERS, ids=lambda token: token.decode())
@pytest.mark.parametrize("position", [0, 391, 783])
def test_a_spoiled_image_leaves_the_direct_parse_or_parses_the_same(
    spoiler: bytes, position: int
) -> None:
    pixels = [b"0.25"] * 784
    pixels[position] = spoiler
    body = b'{"images": [[' + b",".join([b"0.25"] * 784) + b"], [" + b",".join(pixels) + b"]]}"

    parsed = _plain_flat_images(body)

    if parsed is not None:  # plain numbers only: out of range ones are validate_images's
        assert isinstance(orjson.loads(spoiler), (int, float))
        np.testing.assert_array_equal(parsed, general_decode(body))


@pytest.mark.parametrize(
    "body",
    [
        b'{"images": [[0.25]]}',
        json_body([[*ONE_IMAGE[:783], [0.25]]]),  # 784 elements, 784 numbers, one nested
        json_body([ONE_IMAGE[:392], ONE_IMAGE[:392] + ONE_IMAGE]),  # ragged, 1960 numbers
        json_body([ONE_IMAGE, 0.25]),
        json_body([np.full((28, 28), 0.25).tolist()]),  # a layout the general decoder takes
        orjson.dumps({"images": [ONE_IMAGE], "note": "x"}),
        b"\xef\xbb\xbf" + json_body([ONE_IMAGE]),
        json_body([ONE_IMAGE]) + b" x",
        b'["images"]',
        b'{"images": []}',
        b'{"images": 3}',
    ],
    ids=lambda body: body[:24].decode("utf-8", "replace"),
)
def test_anything_but_the_usual_layout_leaves_the_direct_parse(body: bytes) -> None:
    assert _plain_flat_images(body) is None


@settings(max_examples=100, deadline=None)
@given(
    hnp.arrays(
        np.float32,
        st.tuples(st.integers(1, 4), st.just(784)),
        elements=st.floats(0, 1, width=32),
    )
)
def test_any_usual_body_parses_directly_to_what_the_general_decoder_reads(
    images: np.ndarray,
) -> None:
    body = json_body(images.tolist())

    parsed = _plain_flat_images(body)

    assert parsed is not None
    np.testing.assert_array_equal(parsed, general_decode(body))
