"""A deliberately wrong server: v1 and V2 answers in the right format, always label 0.

Started by the load-test tests (``python -m tests.loadtest.broken_server``) on the
address in ``MNIST_SERVE_HOST``/``MNIST_SERVE_PORT``; it lists the models named in
``BROKEN_SERVER_MODELS`` (comma-separated), each at version ``1``.
"""

from __future__ import annotations

import os

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

IMAGE_PIXELS = 784


def json_response(document: object) -> Response:
    return Response(orjson.dumps(document), media_type="application/json")


def count_images(content_type: str, body: bytes) -> int:
    if content_type.startswith("application/octet-stream"):
        return len(body) // IMAGE_PIXELS
    if content_type.startswith("image/"):
        return 1
    return len(orjson.loads(body)["images"])


def create_app(models: list[str]) -> Starlette:
    async def ready(_request: Request) -> Response:
        return json_response({"ready": True})

    async def list_models(_request: Request) -> Response:
        return json_response({"models": [{"name": name, "versions": ["1"]} for name in models]})

    async def predict(request: Request) -> Response:
        count = count_images(request.headers.get("content-type", ""), await request.body())
        prediction = {"label": 0, "confidence": 1.0, "probabilities": [1.0] + [0.0] * 9}
        return json_response(
            {
                "model": request.path_params["model"],
                "version": "1",
                "predictions": [prediction] * count,
            }
        )

    async def infer(request: Request) -> Response:
        count = orjson.loads(await request.body())["inputs"][0]["shape"][0]
        logits = ([1.0] + [0.0] * 9) * count
        output = {"name": "logits", "datatype": "FP32", "shape": [count, 10], "data": logits}
        return json_response(
            {"model_name": request.path_params["model"], "model_version": "1", "outputs": [output]}
        )

    return Starlette(
        routes=[
            Route("/v2/health/ready", ready),
            Route("/v1/models", list_models),
            Route("/v1/models/{model}/predict", predict, methods=["POST"]),
            Route("/v2/models/{model}/infer", infer, methods=["POST"]),
        ]
    )


if __name__ == "__main__":
    uvicorn.run(
        create_app(os.environ.get("BROKEN_SERVER_MODELS", "tiny").split(",")),
        host=os.environ["MNIST_SERVE_HOST"],
        port=int(os.environ["MNIST_SERVE_PORT"]),
        log_level="warning",
    )
