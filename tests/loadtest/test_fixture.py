"""The committed fixture is the first MNIST test images, rebuilt byte for byte by its command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from loadtest.fixtures import FIXTURE_IMAGES, FIXTURE_PATH, load_fixture
from loadtest.fixtures.__main__ import write_fixture
from tests.support import REPO_ROOT


def test_fixture_command_rebuilds_the_committed_file_byte_for_byte(tmp_path: Path) -> None:
    rebuilt = tmp_path / "fixture.npz"

    subprocess.run(
        [sys.executable, "-m", "loadtest.fixtures", "--out", str(rebuilt)],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
    )

    assert rebuilt.read_bytes() == FIXTURE_PATH.read_bytes()


def test_fixture_holds_uint8_images_and_every_digit() -> None:
    fixture = load_fixture()

    assert fixture.images.shape == (FIXTURE_IMAGES, 28, 28)
    assert (fixture.images.dtype, fixture.labels.dtype) == (np.uint8, np.uint8)
    assert set(np.unique(fixture.labels).tolist()) == set(range(10))


def test_fixture_file_does_not_depend_on_when_it_was_written(tmp_path: Path) -> None:
    images = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    labels = np.array([3, 9], dtype=np.uint8)

    write_fixture(images, labels, tmp_path / "a.npz")
    write_fixture(images, labels, tmp_path / "b.npz")

    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    reloaded = load_fixture(tmp_path / "a.npz")
    np.testing.assert_array_equal(reloaded.images, images)
    np.testing.assert_array_equal(reloaded.labels, labels)
