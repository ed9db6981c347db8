"""The "tutorial-style" server the benchmark compares against, measured side by side.

What a first FastAPI + ONNX Runtime server usually looks like: a pydantic model of
the request (a list of lists of floats, validated element by element), a sync
endpoint run in the thread pool, and one ``session.run`` per request (no batching).
It answers the same v1 path and format, so the same wrk script drives both.

Run: ``BASELINE_MODEL_PATH=models/mnist_mlp/1/model.onnx uvicorn --factory
loadtest.baseline_app:create_app_from_env --port 8001``.
"""

from __future__ import annotations

import os

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI
from pydantic import BaseModel


class PredictRequest(BaseModel):
    images: list[list[float]]


class Prediction(BaseModel):
    label: int
    confidence: float
    probabilities: list[float]


class PredictResponse(BaseModel):
    model: str
    predictions: list[Prediction]


def create_app(model_path: str) -> FastAPI:
    app = FastAPI()
    session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])

    @app.get("/v2/health/ready")
    def ready() -> dict[str, bool]:
        return {"ready": True}

    @app.post("/v1/models/{model}/predict")
    def predict(model: str, request: PredictRequest) -> PredictResponse:
        images = np.array(request.images, dtype=np.float32).reshape(-1, 1, 28, 28)
        logits = session.run(None, {"input": images})[0]
        exponentials = np.exp(logits - logits.max(axis=1, keepdims=True))
        probabilities = exponentials / exponentials.sum(axis=1, keepdims=True)
        return PredictResponse(
            model=model,
            predictions=[
                Prediction(
                    label=int(row.argmax()), confidence=float(row.max()), probabilities=row.tolist()
                )
                for row in probabilities
            ],
        )

    return app


def create_app_from_env() -> FastAPI:
    return create_app(os.environ["BASELINE_MODEL_PATH"])
