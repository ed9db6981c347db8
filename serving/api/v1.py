"""The simple v1 API: predict digits from JSON, raw bytes or pictures; list the models.

The predict path is the hot path: one body read, one decode (orjson or numpy),
numpy validation, the batcher, one orjson encode. Large JSON bodies decode in a worker
thread so the event loop keeps serving other requests; pictures decode on the server's
decode pool, which bounds how many decode at once, refuses requests beyond a short
line (503/429) and stops at the request's deadline (504).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import TYPE_CHECKING, Annotated, Any

import anyio.to_thread
import numpy as np
import orjson
from fastapi import APIRouter, Path, Request, Response
from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from serving.api import v1_docs as docs
from serving.api.common import count_failure, infer, read_body, request_deadline, server_of
from serving.codecs.images import decode_image
from serving.codecs.tensors import check_image_count
from serving.codecs.v1 import (
    decode_json_images,
    decode_octet_images,
    encode_probabilities,
    labels_of,
    softmax,
)
from serving.errors import (
    DeadlineExceeded,
    InvalidInput,
    ModelNotFound,
    Overloaded,
    UnsupportedMediaType,
    quoted,
)
from serving.repository import ServedModel

if TYPE_CHECKING:
    from serving.app import Server

router = APIRouter(tags=["v1"])

ModelName = Annotated[str, Path(description="Model name, e.g. mnist_cnn")]

# JSON bodies above this decode in a thread: ~10 images, ~0.3 ms of parsing.
JSON_INLINE_BYTES = 64 * 1024
# Non-file parts tolerated in a multipart body (a browser form's submit button, say).
MAX_FORM_FIELDS = 16

_PREDICT: dict[str, Any] = {
    "summary": "Classify digits: JSON pixels, raw uint8 bytes, a picture, or uploaded files",
    "description": docs.PREDICT_DESCRIPTION,
    "responses": docs.PREDICT_RESPONSES,
    "response_class": Response,
}


# The predict routes read path parameters from request.path_params rather than declaring
# them: FastAPI's per-request parameter validation cost ~10% of a one-image request's CPU.
@router.post("/v1/models/{model}/predict", **_PREDICT, openapi_extra=docs.predict_openapi())
async def predict(request: Request) -> Response:
    return await _predict(request, request.path_params["model"], None)


@router.post(
    "/v1/models/{model}/versions/{version}/predict",
    **_PREDICT,
    openapi_extra=docs.predict_openapi(with_version=True),
)
async def predict_version(request: Request) -> Response:
    params = request.path_params
    return await _predict(request, params["model"], params["version"])


async def _predict(request: Request, name: str, version: str | None) -> Response:
    server = server_of(request)
    served: ServedModel = server.repository.get(name, version)  # 404 / 503 before the body
    try:
        images = await _decode_body(request, server)
    except (Overloaded, DeadlineExceeded) as error:  # from the decode pool
        count_failure(request, served, error, endpoint="v1")
        raise
    result = await infer(request, served, images, endpoint="v1")
    probabilities, labels = result.derived(softmax), result.derived(labels_of)
    body = encode_probabilities(served.name, served.version, probabilities, labels)
    return Response(body, media_type=docs.JSON)


async def _decode_body(request: Request, server: Server) -> np.ndarray:
    """The request's images as float32 (N, 1, 28, 28), chosen by its Content-Type."""
    settings = server.settings
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("identity", ""):  # else compressed bytes would be read as pixels
        raise UnsupportedMediaType(
            f"Content-Encoding {encoding[:32]!r} is not supported here; send the body "
            "uncompressed (V2's infer route takes gzip and deflate)"
        )
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    max_images = settings.max_images_per_request
    if content_type == docs.JSON:
        body = await read_body(request)
        if len(body) <= JSON_INLINE_BYTES:
            return decode_json_images(body, max_images)
        return await anyio.to_thread.run_sync(decode_json_images, body, max_images)
    if content_type == docs.OCTET:
        return decode_octet_images(await read_body(request), max_images)
    if content_type.startswith("image/"):
        picture = await read_body(request)
        job = partial(decode_image, picture, settings.max_image_pixels)
        return await _decode_pictures(request, server, [job])
    if content_type == docs.MULTIPART:
        return await _decode_uploads(request, server)
    accepted = ", ".join(docs.ACCEPTED_TYPES)
    if not content_type:
        raise UnsupportedMediaType(f"no Content-Type; send one of: {accepted}")
    raise UnsupportedMediaType(
        f"Content-Type {content_type!r} is not supported; send one of: {accepted}"
    )


class _WholeMultiPartParser(MultiPartParser):
    """Starlette's multipart parser, refusing a body that ends before its closing
    boundary: python-multipart, under it, drops a part cut short without a word, and the
    request would get fewer predictions than it sent files."""

    def __init__(self, headers: Headers, body: bytes, *, max_files: int, max_fields: int) -> None:
        super().__init__(headers, self._chunks(body), max_files=max_files, max_fields=max_fields)
        self._is_closed = False

    def on_end(self) -> None:  # python-multipart calls it at the closing boundary
        self._is_closed = True

    async def _chunks(self, body: bytes) -> AsyncIterator[bytes]:
        yield body
        # Raised inside parse(), which then closes every file it opened.
        if not self._is_closed:
            raise MultiPartException(
                "it ends before its closing boundary line '--<boundary>--', so its last "
                "part is cut short"
            )


async def _decode_uploads(request: Request, server: Server) -> np.ndarray:
    """Every file part of a multipart body is one picture; other fields are ignored."""
    body = await read_body(request)  # enforces max_body_bytes
    max_images = server.settings.max_images_per_request
    parser = _WholeMultiPartParser(
        request.headers, body, max_files=max_images, max_fields=MAX_FORM_FIELDS
    )
    try:
        form = await parser.parse()
    except MultiPartException as error:
        raise InvalidInput(f"multipart body: {error.message}") from None
    try:
        pictures = [
            (field, value.filename, await value.read())
            for field, value in form.multi_items()
            if isinstance(value, UploadFile)
        ]
    finally:
        await form.close()
    check_image_count(len(pictures), max_images, field="multipart files")
    max_pixels = server.settings.max_image_pixels
    jobs = [
        partial(_decode_file, index, field, filename, picture, max_pixels)
        for index, (field, filename, picture) in enumerate(pictures)
    ]
    return await _decode_pictures(request, server, jobs)


async def _decode_pictures(
    request: Request, server: Server, jobs: list[Callable[[], np.ndarray]]
) -> np.ndarray:
    """Run picture decodes on the server's decode pool, within the request's deadline."""
    images = await server.decode_pool.run(jobs, request_deadline(request))
    return np.stack(images).reshape(len(images), 1, 28, 28)


def _decode_file(
    index: int, field: str, filename: str | None, picture: bytes, max_pixels: int
) -> np.ndarray:
    try:
        return decode_image(picture, max_pixels)
    except InvalidInput as error:
        raise InvalidInput(f"file {index} ({field}={filename!r}): {error.message}") from None


# --- Model information ------------------------------------------------------------------


def _version_info(model: ServedModel) -> dict[str, Any]:
    card = model.card
    metrics = card.metrics
    return {
        "version": model.version,
        "ready": model.is_ready,
        "provider": model.provider,
        "accuracy": metrics.get("test_accuracy_onnxruntime", metrics.get("test_accuracy_pytorch")),
        "architecture": card.architecture.get("name"),
        "created": card.created,
    }


def _model_info(versions: list[ServedModel]) -> dict[str, Any]:
    """One model's entry: the latest version's contract and state, then every version's."""
    latest = versions[-1]
    latest_info = _version_info(latest)
    return {
        "name": latest.name,
        "versions": [model.version for model in versions],
        "latest": latest.version,
        "ready": latest.is_ready,
        "provider": latest.provider,
        "accuracy": latest_info["accuracy"],
        "inputs": [spec.model_dump() for spec in latest.card.inputs],
        "outputs": [spec.model_dump() for spec in latest.card.outputs],
        "labels": latest.card.labels,
        "preprocessing": latest.card.preprocessing,
        "by_version": [_version_info(model) for model in versions],
    }


def _models_by_name(request: Request) -> dict[str, list[ServedModel]]:
    by_name: dict[str, list[ServedModel]] = {}
    for model in server_of(request).repository.models():  # by name, then version
        by_name.setdefault(model.name, []).append(model)
    return by_name


@router.get(
    "/v1/models",
    summary="Every model: versions, input/output contract, accuracy, provider, readiness",
    response_class=Response,
    responses={200: {"model": docs.ModelList}},
)
async def list_models(request: Request) -> Response:
    models = [_model_info(versions) for versions in _models_by_name(request).values()]
    return Response(orjson.dumps({"models": models}), media_type=docs.JSON)


@router.get(
    "/v1/models/{model}",
    summary="One model: versions, input/output contract, accuracy, provider, readiness",
    response_class=Response,
    responses={200: {"model": docs.ModelInfo}, **docs.errors(404)},
)
async def describe_model(request: Request, model: ModelName) -> Response:
    by_name = _models_by_name(request)
    if model not in by_name:
        raise ModelNotFound(f"model {quoted(model)} not found; available: {sorted(by_name)}")
    return Response(orjson.dumps(_model_info(by_name[model])), media_type=docs.JSON)
