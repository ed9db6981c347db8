"""The v1 API through a real app: every body format, every refusal, the model listing."""

from __future__ import annotations

import gzip
import io
import threading
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from serving.api import v1
from serving.app import create_app
from serving.codecs.images import decode_image
from serving.codecs.v1 import decode_octet_images
from serving.runtime import usable_cpus
from serving.settings import Settings
from tests.serving.api_v1.helpers import (
    JSON,
    OCTET,
    PNG,
    PREDICT,
    assert_error,
    assert_predictions_match,
    png_of_digit,
    random_images,
)
from tests.support import (
    PUBLISHED_MODELS,
    MetricSamples,
    block_until_past,
    metric_samples,
    metric_value,
)
from training.data import Mnist

GUARD_S = 10.0  # bound on any wait, so a bug fails a test instead of hanging it


# --- predictions for every body format ---


def test_json_images_are_predicted_exactly_and_in_order(client: TestClient) -> None:
    images = random_images(5)

    response = client.post(PREDICT, content=orjson.dumps({"images": images.tolist()}), headers=JSON)

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    answer = response.json()
    assert (answer["model"], answer["version"]) == ("tiny", "2")
    assert_predictions_match(answer, images)


def test_json_flat_images_with_charset_are_accepted(client: TestClient) -> None:
    images = random_images(2, seed=3)
    body = orjson.dumps({"images": images.reshape(2, 784).tolist()})

    response = client.post(
        PREDICT, content=body, headers={"content-type": "Application/JSON; charset=utf-8"}
    )

    assert response.status_code == 200
    assert_predictions_match(response.json(), images)


def test_version_route_uses_that_version(client: TestClient) -> None:
    images = random_images(3, seed=4)
    body = orjson.dumps({"images": images.tolist()})

    response = client.post("/v1/models/tiny/versions/1/predict", content=body, headers=JSON)

    assert response.json()["version"] == "1"
    assert_predictions_match(response.json(), images, seed=0)


def test_octet_stream_pixels_are_predicted_exactly(client: TestClient) -> None:
    pixels = np.random.default_rng(5).integers(0, 256, size=(4, 784), dtype=np.uint8)

    response = client.post(PREDICT, content=pixels.tobytes(), headers=OCTET)

    assert response.status_code == 200
    assert_predictions_match(response.json(), pixels.astype(np.float32) / np.float32(255))


@pytest.mark.parametrize("image_format", ["PNG", "JPEG"])
def test_picture_is_preprocessed_then_predicted(client: TestClient, image_format: str) -> None:
    buffer = io.BytesIO()
    Image.open(io.BytesIO(png_of_digit())).save(buffer, image_format)
    picture = buffer.getvalue()

    response = client.post(
        PREDICT, content=picture, headers={"content-type": f"image/{image_format.lower()}"}
    )

    assert response.status_code == 200
    assert_predictions_match(response.json(), decode_image(picture, 10**6)[None])


def test_multipart_files_are_predicted_in_order(client: TestClient) -> None:
    pictures = [png_of_digit(seed) for seed in range(4)]
    files = [
        (f"digit{index}", (f"{index}.png", picture, "image/png"))
        for index, picture in enumerate(pictures)
    ]

    response = client.post(PREDICT, files=files, data={"submit": "Classify"})

    assert response.status_code == 200
    expected = np.stack([decode_image(picture, 10**6) for picture in pictures])
    assert_predictions_match(response.json(), expected)


# --- refusals: a 4xx naming the problem, never a 500 ---


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"images": [[0.5, 0.5', "body is not valid JSON"),
        (b'{"images": [[NaN]]}', "body is not valid JSON"),
        (b'{"pictures": []}', 'expected a JSON object {"images": [...]}'),
        (b'{"images": []}', "images: expected at least one image, got none"),
        (orjson.dumps({"images": [[0.5] * 783]}), "images[0]: expected 784 numbers or 28x28"),
        (orjson.dumps({"images": [[[0.5] * 28] * 27 + [[0.5] * 27]]}), "images[0][27]: is a list"),
        (orjson.dumps({"images": [[0.5] * 783 + [None]]}), "images[0][783]: expected a number"),
        (orjson.dumps({"images": [[0.5] * 783 + [True]]}), "got a boolean (true)"),
        (orjson.dumps({"images": [[0.5] * 783 + ["1"]]}), "got a string ('1')"),
        (orjson.dumps({"images": [[0.5] * 783 + [255]]}), "images[0]: pixel 783 is 255"),
        (orjson.dumps({"images": [[0.5] * 783 + [-1]]}), "pixels must be in [0, 1]"),
    ],
)
def test_bad_json_is_a_400_naming_the_problem(
    client: TestClient, body: bytes, message: str
) -> None:
    assert_error(client.post(PREDICT, content=body, headers=JSON), 400, message)


def test_too_many_images_is_a_400_naming_the_limit(tiny_repo: Path) -> None:
    settings = Settings(models_dir=tiny_repo, max_images_per_request=2, max_queue_size=64)
    with TestClient(create_app(settings)) as small_client:
        body = orjson.dumps({"images": random_images(3).tolist()})
        json_response = small_client.post(PREDICT, content=body, headers=JSON)
        octet_response = small_client.post(PREDICT, content=bytes(784 * 3), headers=OCTET)
        files = [("file", (f"{index}.png", png_of_digit(), "image/png")) for index in range(3)]
        multipart_response = small_client.post(PREDICT, files=files)

    assert_error(json_response, 400, "images: 3 images exceed the limit of 2 images per request")
    assert_error(octet_response, 400, "images: 3 images exceed the limit of 2 images per request")
    assert_error(multipart_response, 400, "Maximum number of files is 2")


@pytest.mark.parametrize("length", [0, 100, 784 + 1])
def test_octet_length_not_a_multiple_of_784_is_a_400(client: TestClient, length: int) -> None:
    response = client.post(PREDICT, content=bytes(length), headers=OCTET)

    assert_error(
        response,
        400,
        f"positive multiple of 784 bytes (N images of 28x28 uint8 pixels), got {length} bytes",
    )


@pytest.mark.parametrize(
    ("picture", "message"),
    [
        (b"definitely not a png", "image: not a picture in a supported format"),
        (b"", "image: not a picture"),
        (png_of_digit()[: len(png_of_digit()) // 2], "image: cannot be decoded"),
    ],
)
def test_bad_picture_is_a_400(client: TestClient, picture: bytes, message: str) -> None:
    response = client.post(PREDICT, content=picture, headers={"content-type": "image/png"})

    assert_error(response, 400, message)


def test_blank_picture_has_no_ink(client: TestClient) -> None:
    buffer = io.BytesIO()
    Image.new("L", (40, 40), 255).save(buffer, "PNG")

    response = client.post(
        PREDICT, content=buffer.getvalue(), headers={"content-type": "image/png"}
    )

    assert_error(response, 400, "image has no ink")


def test_bad_file_in_multipart_is_named(client: TestClient) -> None:
    files = [
        ("first", ("good.png", png_of_digit(), "image/png")),
        ("second", ("bad.png", b"junk", "image/png")),
    ]

    response = client.post(PREDICT, files=files)

    assert_error(response, 400, "file 1 (second='bad.png'): image: not a picture")


def test_multipart_without_files_is_a_400(client: TestClient) -> None:
    response = client.post(PREDICT, data={"note": "no files here"}, files={"x": ("", b"")})

    assert response.status_code == 400


def test_malformed_multipart_is_a_400(client: TestClient) -> None:
    response = client.post(
        PREDICT, content=b"--abc\r\n", headers={"content-type": "multipart/form-data"}
    )

    assert_error(response, 400, "multipart body:")


def test_multipart_cut_short_is_a_400_not_fewer_predictions(client: TestClient) -> None:
    def file_part(name: str) -> bytes:
        disposition = f'Content-Disposition: form-data; name="{name}"; filename="{name}.png"'
        return f"--cut\r\n{disposition}\r\n\r\n".encode() + png_of_digit() + b"\r\n"

    # Two whole file parts, but no closing "--cut--": the second part never ended.
    body = file_part("first") + file_part("second")

    response = client.post(
        PREDICT, content=body, headers={"content-type": "multipart/form-data; boundary=cut"}
    )

    assert_error(response, 400, "multipart body: it ends before its closing boundary")


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded"])
def test_unsupported_content_type_is_a_415_listing_the_accepted_ones(
    client: TestClient, content_type: str
) -> None:
    response = client.post(PREDICT, content=b"{}", headers={"content-type": content_type})

    assert_error(response, 415, f"Content-Type '{content_type}' is not supported; send one of:")
    assert "application/json, application/octet-stream, image/png" in response.json()["error"]


def test_missing_content_type_is_a_415(client: TestClient) -> None:
    assert_error(client.post(PREDICT, content=b"{}"), 415, "no Content-Type; send one of")


def gzip_octet_body_of_whole_images() -> bytes:
    """Two images' pixels gzipped into a body whose length is itself a multiple of 784."""
    rng = np.random.default_rng(0)
    for size in range(2 * 784, 3 * 784):  # random bytes do not compress: ~size + 20
        body = gzip.compress(rng.integers(0, 256, size, dtype=np.uint8).tobytes(), mtime=0)
        if len(body) % 784 == 0:
            return body
    raise AssertionError("no gzip body of a whole number of images")


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        (OCTET, gzip_octet_body_of_whole_images()),
        (JSON, gzip.compress(orjson.dumps({"images": random_images(1).tolist()}))),
        ({**PNG, "content-encoding": "deflate"}, zlib.compress(png_of_digit())),
    ],
    ids=["octet", "json", "png"],
)
def test_compressed_body_is_a_415_not_read_as_it_is(
    client: TestClient, headers: dict[str, str], body: bytes
) -> None:
    headers = {"content-encoding": "gzip"} | headers

    response = client.post(PREDICT, content=body, headers=headers)

    assert_error(response, 415, "Content-Encoding")


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/v1/models/nope/predict", "model 'nope' not found; available: ['tiny']"),
        ("/v1/models/tiny/versions/3/predict", "model 'tiny' has no version '3'"),
        ("/v1/models/tiny/versions/x/predict", "has no version 'x'"),
    ],
)
def test_unknown_model_or_version_is_a_404(client: TestClient, path: str, message: str) -> None:
    body = orjson.dumps({"images": random_images(1).tolist()})

    assert_error(client.post(path, content=body, headers=JSON), 404, message)


@pytest.mark.parametrize("path", ["/v1/models/{}/predict", "/v1/models/{}", "/v2/models/{}"])
def test_a_404_quotes_a_long_model_name_shortened(client: TestClient, path: str) -> None:
    name = "n" * 20_000
    body = orjson.dumps({"images": random_images(1).tolist()})

    response = client.request(
        "POST" if path.endswith("predict") else "GET",
        path.format(name),
        content=body,
        headers=JSON,
    )

    assert_error(response, 404, f"model '{'n' * 64}…' ")
    assert len(response.json()["error"]) < 200


def test_body_over_the_limit_is_a_413(tiny_repo: Path) -> None:
    settings = Settings(models_dir=tiny_repo, max_body_bytes=784 * 2)
    with TestClient(create_app(settings)) as small_client:
        too_big = small_client.post(PREDICT, content=bytes(784 * 3), headers=OCTET)
        just_fits = small_client.post(PREDICT, content=bytes(784 * 2), headers=OCTET)

    assert_error(too_big, 413, "over the 1568-byte limit")
    assert just_fits.status_code == 200


def test_good_requests_still_work_after_bad_ones(client: TestClient) -> None:
    images = random_images(2, seed=9)
    bad_bodies = [
        (b"{", JSON),
        (orjson.dumps({"images": [[0.5] * 783 + [None]]}), JSON),
        (bytes(5), OCTET),
        (b"junk", {"content-type": "image/png"}),
    ]
    for body, headers in bad_bodies:
        assert client.post(PREDICT, content=body, headers=headers).status_code == 400

    response = client.post(PREDICT, content=orjson.dumps({"images": images.tolist()}), headers=JSON)

    assert response.status_code == 200
    assert_predictions_match(response.json(), images)


# --- picture decoding: bounded, refused at once when busy, stopped at the deadline ---


class GatedDecode:
    """A stand-in for ``decode_image`` that blocks while its gate is shut."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.calls = 0

    def __call__(self, picture: bytes, max_pixels: int) -> np.ndarray:
        self.calls += 1
        self.gate.wait(GUARD_S)
        return np.full((28, 28), 0.5, dtype=np.float32)


def scrape(client: TestClient) -> MetricSamples:
    return metric_samples(client.get("/metrics").text)


def wait_until(condition: Callable[[], bool]) -> None:
    """Poll a condition with a deadline (no fixed sleeps)."""
    deadline = time.monotonic() + GUARD_S
    while not condition():
        assert time.monotonic() < deadline, "condition never became true"
        time.sleep(0.001)


def test_pictures_beyond_the_decode_line_are_refused_at_once_and_counted(
    tiny_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    decode = GatedDecode()
    monkeypatch.setattr(v1, "decode_image", decode)
    settings = Settings(
        models_dir=tiny_repo, decode_threads=1, max_waiting_decodes=1, overload_status_code=429
    )
    app = create_app(settings)
    with TestClient(app) as client, ThreadPoolExecutor(2) as senders:
        before = scrape(client)
        admitted = [
            senders.submit(client.post, PREDICT, content=png_of_digit(), headers=PNG)
            for _ in range(2)
        ]
        wait_until(lambda: app.server.decode_pool.admitted == 2)  # one decodes, one waits
        refused = client.post(PREDICT, content=png_of_digit(), headers=PNG)  # gate still shut
        decode.gate.set()
        answers = [sent.result(GUARD_S) for sent in admitted]
        after = scrape(client)

    assert_error(refused, 429, "busy decoding pictures")
    assert int(refused.headers["retry-after"]) >= 1
    assert [answer.status_code for answer in answers] == [200, 200]
    assert decode.calls == 2
    for name, labels in [
        ("mnist_serve_rejections_total", {"reason": "decoders_busy"}),
        ("mnist_serve_requests_total", {"outcome": "rejected"}),
    ]:
        delta = metric_value(after, name, model="tiny", **labels) - metric_value(
            before, name, model="tiny", **labels
        )
        assert delta == 1, name


def test_a_multipart_request_stops_decoding_at_its_deadline_with_a_504(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoded: list[bytes] = []

    def outlasts_the_deadline(picture: bytes, max_pixels: int) -> np.ndarray:
        decoded.append(picture)
        # A slow picture: the request's 1000 ms began before this decode did, so they
        # have passed when it ends, however late it started.
        block_until_past(time.monotonic() + 1.0)
        return np.full((28, 28), 0.5, dtype=np.float32)

    monkeypatch.setattr(v1, "decode_image", outlasts_the_deadline)
    files = [("file", (f"{index}.png", png_of_digit(index), "image/png")) for index in range(3)]
    before = scrape(client)

    response = client.post(PREDICT, files=files, headers={"X-Request-Timeout-Ms": "1000"})

    assert_error(response, 504, "timed out while its pictures were decoded")
    assert "1 of 3 done" in response.json()["error"]
    assert len(decoded) == 1
    timeouts = [
        metric_value(samples, "mnist_serve_requests_total", model="tiny", outcome="timeout")
        for samples in (before, scrape(client))
    ]
    assert timeouts[1] - timeouts[0] == 1


def test_pictures_decode_on_as_many_threads_as_the_usable_cpus(tiny_repo: Path) -> None:
    app = create_app(Settings(models_dir=tiny_repo))

    assert app.server.decode_pool.threads == usable_cpus()


# --- model listing ---


def test_models_lists_every_model_with_its_contract_and_state(client: TestClient) -> None:
    response = client.get("/v1/models")

    assert response.status_code == 200
    (tiny,) = response.json()["models"]
    assert tiny["name"] == "tiny"
    assert tiny["versions"] == ["1", "2"]
    assert tiny["latest"] == "2"
    assert tiny["ready"] is True
    assert tiny["provider"] == "CPUExecutionProvider"
    assert tiny["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 1, 28, 28]}]
    assert tiny["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": [-1, 10]}]
    assert tiny["labels"] == [str(digit) for digit in range(10)]
    assert [entry["version"] for entry in tiny["by_version"]] == ["1", "2"]
    assert {entry["architecture"] for entry in tiny["by_version"]} == {"linear"}


def test_one_model_is_described(client: TestClient) -> None:
    listed = client.get("/v1/models").json()["models"][0]

    response = client.get("/v1/models/tiny")

    assert response.status_code == 200
    assert response.json() == listed


def test_unknown_model_description_is_a_404(client: TestClient) -> None:
    assert_error(client.get("/v1/models/nope"), 404, "model 'nope' not found")


def test_openapi_documents_every_body_type_and_error(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()

    for path in (
        PREDICT.replace("tiny", "{model}"),
        "/v1/models/{model}/versions/{version}/predict",
    ):
        operation = spec["paths"][path]["post"]
        assert set(operation["requestBody"]["content"]) == {
            "application/json",
            "application/octet-stream",
            "image/png",
            "image/jpeg",
            "multipart/form-data",
        }
        assert {"200", "400", "404", "413", "415", "503", "504"} <= set(operation["responses"])
    assert "/v1/models" in spec["paths"]


# --- the published models, served, agree with ONNX Runtime offline ---


@pytest.mark.parametrize("name", ["mnist_cnn", "mnist_mlp"])
def test_served_accuracy_equals_offline_accuracy(name: str, mnist: Mnist) -> None:
    import onnxruntime

    pixels, labels = mnist.test_images[:1000], mnist.test_labels[:1000]
    with TestClient(create_app(Settings(models_dir=PUBLISHED_MODELS))) as published:
        version = published.get(f"/v1/models/{name}").json()["latest"]
        served = [
            published.post(
                f"/v1/models/{name}/predict", content=chunk.tobytes(), headers=OCTET
            ).json()["predictions"]
            for chunk in np.array_split(pixels, 8)
        ]
    served_labels = np.array([p["label"] for chunk in served for p in chunk])
    session = onnxruntime.InferenceSession(
        PUBLISHED_MODELS / name / version / "model.onnx", providers=["CPUExecutionProvider"]
    )
    images = decode_octet_images(pixels.tobytes(), max_images=1000)
    offline_labels = session.run(["logits"], {"input": images})[0].argmax(axis=1)

    assert (served_labels == labels).mean() == (offline_labels == labels).mean()
    assert (served_labels == offline_labels).all()
