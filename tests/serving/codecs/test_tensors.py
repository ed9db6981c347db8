"""validate_images: every API path's last check before the batcher."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from serving.codecs.tensors import _is_in_unit_range, validate_images
from serving.errors import InvalidInput
from tests.support import ExampleTally


@pytest.mark.parametrize("shape", [(3, 784), (3, 28, 28), (3, 1, 28, 28)])
def test_accepted_layouts_become_n_1_28_28_float32(shape: tuple[int, ...]) -> None:
    array = np.random.default_rng(0).random(shape)

    images = validate_images(array, max_images=8)

    assert images.shape == (3, 1, 28, 28)
    assert images.dtype == np.float32
    assert images.flags.c_contiguous
    np.testing.assert_array_equal(images.reshape(3, 784), array.reshape(3, 784).astype(np.float32))


def test_non_contiguous_input_is_made_contiguous() -> None:
    array = np.random.default_rng(0).random((28, 28, 2)).astype(np.float32).transpose(2, 0, 1)

    images = validate_images(array, max_images=8)

    assert images.flags.c_contiguous
    np.testing.assert_array_equal(images[:, 0], array)


def test_integer_zeros_and_ones_are_accepted() -> None:
    images = validate_images(np.ones((2, 784), dtype=np.int64), max_images=8)

    assert images.dtype == np.float32
    assert images.max() == 1.0


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        ((784,), r"expected shape \(N, 784\), \(N, 28, 28\) or \(N, 1, 28, 28\), got \(784,\)"),
        ((28, 28), r"got \(28, 28\)"),
        ((2, 783), r"got \(2, 783\)"),
        ((2, 3, 28, 28), r"got \(2, 3, 28, 28\)"),
        ((), r"got \(\)"),
    ],
)
def test_wrong_shapes_are_refused_with_the_shape(shape: tuple[int, ...], expected: str) -> None:
    with pytest.raises(InvalidInput, match=expected):
        validate_images(np.zeros(shape, dtype=np.float32), max_images=8)


@pytest.mark.parametrize("shape", [(0,), (0, 784), (0, 28, 28)])
def test_empty_batch_is_refused(shape: tuple[int, ...]) -> None:
    with pytest.raises(InvalidInput, match="expected at least one image, got none"):
        validate_images(np.zeros(shape, dtype=np.float32), max_images=8)


def test_too_many_images_names_the_limit() -> None:
    with pytest.raises(InvalidInput, match="9 images exceed the limit of 8 images per request"):
        validate_images(np.zeros((9, 784), dtype=np.float32), max_images=8)


@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf])
def test_non_finite_pixel_is_named(bad_value: float) -> None:
    array = np.zeros((3, 784), dtype=np.float32)
    array[2, 100] = bad_value

    with pytest.raises(InvalidInput, match=r"images\[2\]: pixel 100 is .*must be finite"):
        validate_images(array, max_images=8)


def test_raw_0_255_pixels_are_refused_with_a_hint() -> None:
    array = np.zeros((1, 784), dtype=np.float32)
    array[0, 5] = 255.0

    with pytest.raises(InvalidInput, match=r"images\[0\]: pixel 5 is 255; .*divide 0-255"):
        validate_images(array, max_images=8)


@pytest.mark.parametrize(
    ("dtype", "value", "shown"),
    [(np.float32, 1.0000001, "1.0000001"), (np.float64, 1.00000001, "1.00000001")],
)
def test_pixel_just_above_1_is_shown_as_sent_without_the_0_255_hint(
    dtype: type, value: float, shown: str
) -> None:
    array = np.zeros((1, 784), dtype=dtype)
    array[0, 7] = value

    with pytest.raises(InvalidInput) as refusal:
        validate_images(array, max_images=8)

    assert refusal.value.message == f"images[0]: pixel 7 is {shown}; pixels must be in [0, 1]"


def test_negative_pixel_is_refused() -> None:
    array = np.zeros((1, 28, 28), dtype=np.float64)
    array[0, 1, 2] = -0.25

    with pytest.raises(InvalidInput, match=r"images\[0\]: pixel 30 is -0.25; pixels must be in"):
        validate_images(array, max_images=8)


@pytest.mark.parametrize("dtype", [np.bool_, np.complex64, np.str_, object])
def test_non_real_dtypes_are_refused(dtype: type) -> None:
    with pytest.raises(InvalidInput, match="expected numbers, got an array of dtype"):
        validate_images(np.zeros((1, 784), dtype=dtype), max_images=8)


def test_field_name_is_used_in_messages() -> None:
    with pytest.raises(InvalidInput, match=r"^inputs\[0\]\.data\[0\]: pixel 0"):
        validate_images(np.full((1, 784), 2.0), max_images=8, field="inputs[0].data")


@st.composite
def numeric_arrays(draw: st.DrawFn) -> np.ndarray:
    """Any shape and values, and more often an image layout (0-5 images) or pixels in
    [0, 1]: about a third of the arrays are valid images."""
    dtype = np.dtype(draw(st.sampled_from([np.float32, np.float64, np.uint8, np.int32])))
    image_shapes = st.tuples(
        st.integers(0, 5), st.sampled_from([(784,), (28, 28), (1, 28, 28)])
    ).map(lambda spec: (spec[0], *spec[1]))
    any_shapes = hnp.array_shapes(min_dims=0, max_dims=4, max_side=30)
    shape = draw(draw(st.sampled_from([image_shapes, image_shapes, any_shapes])))
    unit_pixels = st.integers(0, 1) if dtype.kind in "iu" else st.floats(0, 1, width=32)
    elements = draw(st.sampled_from([unit_pixels, unit_pixels, None]))  # None: any value
    return draw(hnp.arrays(dtype, shape, elements=elements))


def test_any_numeric_array_gives_valid_images_or_invalid_input() -> None:
    tally = ExampleTally()

    @settings(deadline=None)  # wall-clock limits are flaky on a shared machine
    @given(numeric_arrays())
    def check(array: np.ndarray) -> None:
        images = tally.decoded(validate_images, array, max_images=4)
        if images is None:
            return
        assert images.shape == (len(array), 1, 28, 28)
        assert len(images) in range(1, 5)
        assert images.dtype == np.float32
        assert np.isfinite(images).all()
        assert images.min() >= 0.0
        assert images.max() <= 1.0
        np.testing.assert_array_equal(images.reshape(-1), array.reshape(-1).astype(np.float32))

    check()
    tally.assert_both_at_least(0.1)


@settings(deadline=None)  # wall-clock limits are flaky on a shared machine
@given(
    hnp.arrays(
        dtype=np.float32,
        shape=st.tuples(st.integers(0, 6), st.just(784)),
        elements=st.floats(-2.0, 2.0, width=32) | st.sampled_from([np.nan, np.inf, 0.0, 1.0]),
    )
)
def test_valid_batches_are_accepted_and_others_refused(array: np.ndarray) -> None:
    is_valid = 1 <= len(array) <= 4 and bool(((array >= 0) & (array <= 1)).all())

    if is_valid:
        np.testing.assert_array_equal(validate_images(array, max_images=4).reshape(-1, 784), array)
    else:
        with pytest.raises(InvalidInput):
            validate_images(array, max_images=4)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([np.float64, np.float32]).flatmap(
        lambda dtype: hnp.arrays(
            dtype,
            st.tuples(st.integers(1, 3), st.just(784)),
            elements=st.one_of(
                st.floats(0, 1, width=np.dtype(dtype).itemsize * 8),
                st.floats(width=np.dtype(dtype).itemsize * 8),
                st.sampled_from([-0.0, 1.0, 0.0]),
            ),
        )
    )
)
def test_the_one_reduction_range_check_agrees_with_min_and_max(array: np.ndarray) -> None:
    expected = bool(array.min() >= 0 and array.max() <= 1)

    assert _is_in_unit_range(array) is expected
