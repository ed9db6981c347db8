"""The ceiling the benchmark measures mnist-serve's framework overhead against.

A plain ASGI app with a batcher and nothing else: no framework, no validation beyond
what numpy does, no metrics, no logs, no limits. Requests that arrive while a batch
runs are gathered into the next one, and ONNX Runtime runs on the event loop. It
answers the same v1 path with the same JSON, so the same wrk script drives it. What
mnist-serve does per request beyond this is what its features and frameworks cost.

Run: ``BASELINE_MODEL_PATH=models/mnist_mlp/1/model.onnx uvicorn --factory
loadtest.plain_app:create_app_from_env --workers 2 --port 8002``.
"""

from __future__ import annotations

import asyncio
import os

import numpy as np
import onnxruntime as ort
import orjson
from starlette.types import Receive, Scope, Send

READY_PATH = "/v2/health/ready"
JSON_HEADERS = [(b"content-type", b"application/json")]


class PlainBatchingApp:
    """Read the body, queue the images, await the batch's answer, write the JSON."""

    def __init__(self, model_path: str) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = ort.InferenceSession(
            model_path, options, providers=["CPUExecutionProvider"]
        )
        self._waiting: list[tuple[np.ndarray, asyncio.Future[np.ndarray]]] = []
        self._arrived: asyncio.Event | None = None
        self._batching: asyncio.Task[None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        body = await _read_body(receive)
        if scope["path"] == READY_PATH:
            await _respond(send, b'{"ready":true}')
            return
        images = np.asarray(orjson.loads(body)["images"], dtype=np.float32)
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        self._waiting.append((images.reshape(-1, 1, 28, 28), future))
        assert self._arrived is not None
        self._arrived.set()
        logits = await future
        exponentials = np.exp(logits - logits.max(axis=1, keepdims=True))
        probabilities = exponentials / exponentials.sum(axis=1, keepdims=True)
        predictions = [
            {"label": int(row.argmax()), "confidence": row.max(), "probabilities": row}
            for row in probabilities
        ]
        document = {"model": scope["path"].split("/")[3], "predictions": predictions}
        await _respond(send, orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY))

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._arrived = asyncio.Event()
                self._batching = asyncio.get_running_loop().create_task(self._batch_forever())
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _batch_forever(self) -> None:
        assert self._arrived is not None
        while True:
            await self._arrived.wait()
            self._arrived.clear()
            batch, self._waiting = self._waiting, []
            if not batch:
                continue
            images = np.concatenate([images for images, _ in batch])
            logits = self._session.run(None, {"input": images})[0]
            offset = 0
            for request_images, future in batch:
                future.set_result(logits[offset : offset + len(request_images)])
                offset += len(request_images)
            await asyncio.sleep(0)  # let the answered requests respond, and new ones arrive


async def _read_body(receive: Receive) -> bytes:
    chunks, more = [], True
    while more:
        message = await receive()
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    return b"".join(chunks)


async def _respond(send: Send, body: bytes) -> None:
    headers = [*JSON_HEADERS, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def create_app_from_env() -> PlainBatchingApp:
    return PlainBatchingApp(os.environ["BASELINE_MODEL_PATH"])
