"""KServe V2 (Open Inference Protocol) routes, with Triton's extensions.

Binary tensor data, model configuration, statistics and model repository; health
lives in ``serving.api.health``. Each model route exists with and without
``/versions/{version}`` (without it, the highest loaded version answers).
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Path, Request, Response

from serving.api import v2_docs as docs
from serving.api import v2_info as info
from serving.api.common import infer, read_body, server_of
from serving.codecs.compression import decompress_body
from serving.codecs.v2 import (
    BINARY_CONTENT_TYPE,
    HEADER_LENGTH,
    JSON_CONTENT_TYPE,
    decode_infer_request,
    encode_infer_response,
)
from serving.errors import (
    Forbidden,
    InvalidInput,
    ModelNotFound,
    PayloadTooLarge,
    ServingError,
    quoted,
)
from serving.repository import ModelRepository, ServedModel
from serving.runtime import ModelLoadError

router = APIRouter(tags=["v2"])

# Repository requests are small objects ({"ready": true}, {"parameters": {...}}; config
# and file overrides are refused): 16 MiB of empty arrays would take orjson seconds,
# holding the GIL for every request.
MAX_REPOSITORY_BODY_BYTES = 64 * 1024

ModelName = Annotated[str, Path(description="Model name, e.g. mnist_mlp")]
Version = Annotated[str, Path(description="Model version (an integer folder name)")]


def _json(document: Any) -> Response:
    return Response(orjson.dumps(document), media_type=JSON_CONTENT_TYPE)


def _repository(request: Request) -> ModelRepository:
    return server_of(request).repository


def _versions(repository: ModelRepository, name: str) -> list[str]:
    return [model.version for model in repository.models() if model.name == name]


@router.get(
    "/v2",
    summary="Server metadata: name, version and the protocol extensions implemented",
    responses={200: {"model": docs.ServerMetadata}},
)
async def server_metadata(request: Request) -> Response:
    return _json(
        {
            "name": "mnist-serve",
            "version": request.app.version,
            "extensions": list(info.EXTENSIONS),
        }
    )


# Registered before /v2/models/{model}, which would otherwise take "stats" for a model name.
@router.get(
    "/v2/models/stats",
    summary="Statistics of every loaded model version (statistics extension)",
    responses={200: {"model": docs.ModelStats}},
)
async def all_statistics(request: Request) -> Response:
    models = _repository(request).models()
    return _json({"model_stats": [info.model_statistics(model) for model in models]})


# --- Model metadata -------------------------------------------------------------------

_METADATA = {
    "summary": "Model metadata: versions, platform, input and output tensors",
    "responses": {200: {"model": docs.ModelMetadata}, **docs.errors(404, 503)},
}


def _metadata(request: Request, name: str, version: str | None) -> Response:
    repository = _repository(request)
    model = repository.get(name, version)
    return _json(info.model_metadata(model, _versions(repository, name)))


@router.get("/v2/models/{model}", **_METADATA)
async def model_metadata(request: Request, model: ModelName) -> Response:
    return _metadata(request, model, None)


@router.get("/v2/models/{model}/versions/{version}", **_METADATA)
async def model_version_metadata(request: Request, model: ModelName, version: Version) -> Response:
    return _metadata(request, model, version)


# --- Model readiness ------------------------------------------------------------------

_READY = {
    "summary": "Model readiness: 200 when it serves, 503 while loading or unloading",
    "responses": {200: {"model": docs.ModelReady}, **docs.errors(404, 503)},
}


def _ready(request: Request, name: str, version: str | None) -> Response:
    model = _repository(request).get(name, version)  # raises 404 / 503
    return _json({"name": model.name, "version": model.version, "ready": True})


@router.get("/v2/models/{model}/ready", **_READY)
async def model_ready(request: Request, model: ModelName) -> Response:
    return _ready(request, model, None)


@router.get("/v2/models/{model}/versions/{version}/ready", **_READY)
async def model_version_ready(request: Request, model: ModelName, version: Version) -> Response:
    return _ready(request, model, version)


# --- Inference ------------------------------------------------------------------------

_INFER = {
    "summary": "Classify images: JSON or binary tensors in, logits out",
    "description": "Input 'input': FP32/FP64/FP16 pixels in [0, 1] or UINT8 pixels 0-255, "
    "shape [N, 1, 28, 28], [N, 28, 28] or [N, 784]. Output 'logits' FP32 [N, 10]. "
    "parameters.timeout (microseconds, as Triton reads it) or the X-Request-Timeout-Ms "
    "header bounds the wait. The body may be sent with Content-Encoding gzip or deflate.",
    "openapi_extra": docs.INFER_OPENAPI,
    "responses": docs.INFER_RESPONSES,
}


async def _infer(request: Request, name: str, version: str | None) -> Response:
    model: ServedModel = _repository(request).get(name, version)
    settings = server_of(request).settings
    body = decompress_body(
        await read_body(request), request.headers.get("content-encoding"), settings.max_body_bytes
    )
    decoded = decode_infer_request(
        body,
        request.headers.get(HEADER_LENGTH),
        input_name=model.card.inputs[0].name,
        output_names=[model.card.outputs[0].name],
        max_images=settings.max_images_per_request,
    )
    result = await infer(request, model, decoded.images, endpoint="v2", timeout_s=decoded.timeout_s)
    content, header_length = encode_infer_response(
        model_name=model.name,
        model_version=model.version,
        request_id=decoded.request_id,
        outputs={model.card.outputs[0].name: result.outputs},
        requested=decoded.outputs,
    )
    if header_length is None:
        return Response(content, media_type=JSON_CONTENT_TYPE)
    return Response(
        content, media_type=BINARY_CONTENT_TYPE, headers={HEADER_LENGTH: str(header_length)}
    )


@router.post("/v2/models/{model}/infer", **_INFER)
async def model_infer(request: Request, model: ModelName) -> Response:
    return await _infer(request, model, None)


@router.post("/v2/models/{model}/versions/{version}/infer", **_INFER)
async def model_version_infer(request: Request, model: ModelName, version: Version) -> Response:
    return await _infer(request, model, version)


# --- Model configuration extension ----------------------------------------------------

_CONFIG = {
    "summary": "Triton model configuration: batching, queue and instances as really run",
    "responses": docs.MODEL_CONFIG_RESPONSES,
}


def _config(request: Request, name: str, version: str | None) -> Response:
    model = _repository(request).get(name, version)
    return _json(info.model_config(model, server_of(request).settings))


@router.get("/v2/models/{model}/config", **_CONFIG)
async def model_config(request: Request, model: ModelName) -> Response:
    return _config(request, model, None)


@router.get("/v2/models/{model}/versions/{version}/config", **_CONFIG)
async def model_version_config(request: Request, model: ModelName, version: Version) -> Response:
    return _config(request, model, version)


# --- Statistics extension -------------------------------------------------------------

_STATS = {
    "summary": "Cumulative inference statistics (Triton statistics extension)",
    "responses": {200: {"model": docs.ModelStats}, **docs.errors(404)},
}


def _statistics(request: Request, name: str, version: str | None) -> Response:
    repository = _repository(request)
    models = [
        model
        for model in repository.models()
        if model.name == name and version in (None, model.version)
    ]
    if not models:
        repository.get(name, version)  # raises the precise 404 (or 503)
    return _json({"model_stats": [info.model_statistics(model) for model in models]})


@router.get("/v2/models/{model}/stats", **_STATS)
async def model_statistics(request: Request, model: ModelName) -> Response:
    return _statistics(request, model, None)


@router.get("/v2/models/{model}/versions/{version}/stats", **_STATS)
async def model_version_statistics(
    request: Request, model: ModelName, version: Version
) -> Response:
    return _statistics(request, model, version)


# --- Model repository extension -------------------------------------------------------


def _require_model_control(request: Request) -> None:
    """Load and unload change what every client gets: off unless the operator allows it."""
    if not server_of(request).settings.model_control:
        raise Forbidden(
            "model control is disabled: start the server with --model-control "
            "(MNIST_SERVE_MODEL_CONTROL=true) to allow load and unload"
        )


async def _optional_json_object(request: Request) -> dict[str, Any]:
    """An optional JSON-object body: tritonclient sends "" for index, {} for load."""
    body = await read_body(request)
    if len(body) > MAX_REPOSITORY_BODY_BYTES:  # not parsed: see the constant
        raise PayloadTooLarge(
            f"a repository request body is at most {MAX_REPOSITORY_BODY_BYTES} bytes; "
            f"this one has {len(body)}"
        )
    if not body.strip():
        return {}
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise InvalidInput(f"the body is not valid JSON: {error}") from None
    if not isinstance(document, dict):
        raise InvalidInput("the body must be a JSON object")
    return document


@router.post(
    "/v2/repository/index",
    summary="Every model version on disk or loaded, with its state",
    openapi_extra=docs.INDEX_OPENAPI,
    responses={200: {"model": list[docs.RepositoryIndexEntry]}, **docs.errors(400)},
)
async def repository_index(request: Request) -> Response:
    ready_only = (await _optional_json_object(request)).get("ready", False)
    if not isinstance(ready_only, bool):
        raise InvalidInput("'ready' must be true or false")
    entries = _repository(request).index()
    return _json(
        [info.index_entry(entry) for entry in entries if entry.state == "READY" or not ready_only]
    )


@router.post(
    "/v2/repository/models/{model}/load",
    summary="Load, or reload from disk, every version of a model; old versions drain first",
    openapi_extra=docs.OPTIONAL_BODY_OPENAPI,
    responses={200: {"model": docs.ModelMetadata}, **docs.errors(400, 403, 404)},
)
async def repository_load(request: Request, model: ModelName) -> Response:
    _require_model_control(request)
    parameters = (await _optional_json_object(request)).get("parameters", {})
    if not isinstance(parameters, dict):
        raise InvalidInput("'parameters' must be an object")
    if "config" in parameters or any(key.startswith("file:") for key in parameters):
        raise InvalidInput("loading with an override config or files is not supported")
    repository = _repository(request)
    try:
        await repository.load(model)
    except ModelLoadError as error:
        message = f"failed to load model {quoted(model)}: {error}"
        raise ServingError(message, status_code=400) from None
    return _json(info.model_metadata(repository.get(model), _versions(repository, model)))


@router.post(
    "/v2/repository/models/{model}/unload",
    summary="Stop serving a model: refuse new requests, finish queued ones, free it",
    openapi_extra=docs.OPTIONAL_BODY_OPENAPI,
    responses={200: {"model": docs.ModelState}, **docs.errors(400, 403, 404)},
)
async def repository_unload(request: Request, model: ModelName) -> Response:
    _require_model_control(request)
    await _optional_json_object(request)  # unload_dependents: a model here has none
    repository = _repository(request)
    if model in repository.names():
        await repository.unload(model)
    elif not any(entry.name == model for entry in repository.index()):
        raise ModelNotFound(f"model {quoted(model)} not found in the repository")
    # Unloading an unloaded model succeeds, as in Triton.
    return _json({"name": model, "state": "UNLOADED"})
