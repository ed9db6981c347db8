"""v1 predictions for every body type: JSON, raw octets, a picture, multipart files; and
the published models, served, agree with ONNX Runtime offline."""

from __future__ import annotations

import io

import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from serving.app import create_app
from serving.codecs.images import decode_image
from serving.codecs.v1 import decode_octet_images
from serving.settings import Settings
from tests.serving.api_v1.helpers import (
    JSON,
    OCTET,
    PREDICT,
    assert_predictions_match,
    png_of_digit,
    random_images,
)
from tests.support import PUBLISHED_MODELS
from training.data import Mnist


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
