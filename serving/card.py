"""The model card (``model.json``): the one contract between training and serving.

Training writes it next to ``model.onnx``; serving reads names, dtypes and shapes
from it rather than from constants, and checks the file's SHA-256 against it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

CARD_FILE = "model.json"
MODEL_FILE = "model.onnx"


class TensorSpec(BaseModel):
    """One named tensor; ``-1`` in ``shape`` is the dynamic batch dimension."""

    name: str
    datatype: str = Field(description="V2 protocol datatype name, e.g. FP32")
    shape: list[int]


class ModelCard(BaseModel):
    """What a published model is, how it was made and how well it does."""

    model_config = ConfigDict(extra="allow")

    name: str
    version: int = Field(ge=1)
    architecture: dict[str, Any] = Field(description="name and hyper-parameters")
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    labels: list[str] = Field(default_factory=lambda: [str(digit) for digit in range(10)])
    preprocessing: str = Field(
        "float32 pixels in [0, 1] (raw/255), 0 = background, shape [N, 1, 28, 28]; "
        "any normalisation is inside the graph"
    )
    metrics: dict[str, float] = Field(
        default_factory=dict,
        description="test_accuracy_pytorch, test_accuracy_onnxruntime, validation_accuracy",
    )
    # int | float: counts stay integers in new cards; older cards wrote them as floats.
    parity: dict[str, int | float] = Field(
        default_factory=dict, description="max_abs_logit_diff, argmax_mismatches, images"
    )
    training: dict[str, Any] = Field(default_factory=dict, description="optimiser, epochs, time")
    data_sha256: str = ""
    # Optional: cards published before these were recorded have neither.
    data_source: str | None = Field(None, description="where MNIST was fetched from")
    code_revision: str | None = Field(
        None, description='git commit of the training code, "-dirty" if changed; null outside git'
    )
    model_sha256: str
    opset: int
    library_versions: dict[str, str] = Field(default_factory=dict)
    created: str = Field(description="ISO 8601 timestamp of the export")

    @classmethod
    def read(cls, version_dir: Path) -> ModelCard:
        return cls.model_validate_json((version_dir / CARD_FILE).read_bytes())

    def write(self, version_dir: Path) -> None:
        (version_dir / CARD_FILE).write_text(self.model_dump_json(indent=2) + "\n")


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
