"""Export a trained model to ONNX, prove ONNX Runtime agrees with PyTorch, publish it.

A model is published only if ONNX Runtime's logits on the whole test set are within
``PARITY_TOLERANCE`` of PyTorch's and no argmax differs; the card records the figures.
A new export always becomes a new version directory; nothing is overwritten.
"""

from __future__ import annotations

import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from serving.card import MODEL_FILE, ModelCard, TensorSpec, file_sha256
from training.data import Mnist
from training.errors import PublishError, TrainingError
from training.train import TrainResult, as_tensor, predict_logits

OPSET = 18  # the dynamo exporter's native opset; onnxruntime >= 1.14 runs it
PARITY_TOLERANCE = 1e-4  # max |logit difference| allowed between PyTorch and ORT
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
ORT_BATCH_SIZE = 1000
PUBLISH_ATTEMPTS = 5
LIBRARIES = ("torch", "onnx", "onnxruntime", "onnxscript", "numpy")


class ParityError(TrainingError):
    """ONNX Runtime's answers differ from PyTorch's: the export must not be published."""


@dataclass(frozen=True)
class Parity:
    """How closely ORT's logits match PyTorch's on ``images`` images."""

    max_abs_logit_diff: float
    argmax_mismatches: int
    images: int


def export_onnx(model: nn.Module, path: Path, opset: int = OPSET) -> None:
    """Write a self-contained ONNX file: ``input`` [batch,1,28,28] -> ``logits`` [batch,10]."""
    model.eval()
    example = torch.zeros(2, 1, 28, 28)
    batch = torch.export.Dim("batch")
    with warnings.catch_warnings(), quiet_logger("torch.onnx._internal.exporter._registration"):
        # torch 2.13's exporter trips its own pytree deprecation; not ours to fix.
        warnings.filterwarnings(
            "ignore",
            message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
            category=FutureWarning,
        )
        program = torch.onnx.export(
            model,
            (example,),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            opset_version=opset,
            dynamo=True,
            dynamic_shapes=({0: batch},),
            verbose=False,
        )
    program.save(str(path), external_data=False)
    onnx.checker.check_model(str(path), full_check=True)


@contextmanager
def quiet_logger(name: str, level: int = logging.ERROR) -> Iterator[None]:
    """Raise one logger's level for a block (the exporter warns about absent torchvision)."""
    logger = logging.getLogger(name)
    saved = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(saved)


def onnx_logits(path: Path, images: np.ndarray) -> np.ndarray:
    """Run the ONNX file on float32 [N,1,28,28] images with ONNX Runtime (CPU)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    chunks = range(0, len(images), ORT_BATCH_SIZE)
    return np.concatenate(
        [
            session.run([OUTPUT_NAME], {INPUT_NAME: images[i : i + ORT_BATCH_SIZE]})[0]
            for i in chunks
        ]
    )


def measure_parity(torch_logits: np.ndarray, ort_logits: np.ndarray) -> Parity:
    return Parity(
        max_abs_logit_diff=float(np.abs(torch_logits - ort_logits).max()),
        argmax_mismatches=int((torch_logits.argmax(1) != ort_logits.argmax(1)).sum()),
        images=len(torch_logits),
    )


def check_parity(
    model: nn.Module, path: Path, images: np.ndarray, tolerance: float = PARITY_TOLERANCE
) -> tuple[Parity, np.ndarray]:
    """(parity, ORT logits); ParityError if any argmax differs or a logit is off by > tolerance."""
    torch_logits = predict_logits(model, torch.from_numpy(images)).numpy()
    ort_logits = onnx_logits(path, images)
    parity = measure_parity(torch_logits, ort_logits)
    if parity.argmax_mismatches or not parity.max_abs_logit_diff <= tolerance:
        raise ParityError(
            f"ONNX Runtime disagrees with PyTorch on {parity.images} images: "
            f"{parity.argmax_mismatches} argmax mismatches, max |logit diff| "
            f"{parity.max_abs_logit_diff:.3g} (tolerance {tolerance:g})"
        )
    return parity, ort_logits


def graph_specs(path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Input and output TensorSpecs read from the ONNX graph (symbolic dims -> -1)."""
    graph = onnx.load(str(path), load_external_data=False).graph

    def spec(value: onnx.ValueInfoProto) -> TensorSpec:
        if value.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
            raise ValueError(f"{value.name} is not float32")
        dims = value.type.tensor_type.shape.dim
        shape = [dim.dim_value if dim.HasField("dim_value") else -1 for dim in dims]
        return TensorSpec(name=value.name, datatype="FP32", shape=shape)

    return [spec(value) for value in graph.input], [spec(value) for value in graph.output]


def next_version(model_dir: Path) -> int:
    """One more than the highest integer version directory (1 if there is none)."""
    versions = [int(p.name) for p in model_dir.glob("*") if p.is_dir() and p.name.isdigit()]
    return max(versions, default=0) + 1


def library_versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for library in LIBRARIES:
        try:
            found[library] = version(library)
        except PackageNotFoundError:
            continue
    return found


def code_revision(directory: Path = Path(__file__).parent) -> str | None:
    """The git commit checked out in ``directory``, + "-dirty" if tracked files differ.

    None outside a git checkout or without git (a Docker image, an installed package).
    """
    git = ["git", "-C", str(directory)]
    try:
        commit = subprocess.run(
            [*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        changes = subprocess.run(
            [*git, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("-dirty" if changes.strip() else "")


def describe_machine() -> str:
    """CPU model, cores and load at export time (the box may be shared: times vary)."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [line for line in cpuinfo.read_text().splitlines() if line.startswith("model name")]
        cpu = names[0].split(":", 1)[1].strip() if names else cpu
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{cpu}, {os.cpu_count()} logical CPUs, {platform.system()}, load average {load:.1f}"


def build_card(
    result: TrainResult,
    model_path: Path,
    version: int,
    parity: Parity,
    ort_accuracy: float,
    data_sha256: str,
    data_source: str | None = None,
) -> ModelCard:
    """The model card for ``model_path``: shapes are read from the graph itself."""
    config = result.config
    inputs, outputs = graph_specs(model_path)
    parameters = sum(p.numel() for p in result.model.parameters())
    return ModelCard(
        name=config.model,
        version=version,
        architecture={"name": config.model, **config.architecture(), "parameters": parameters},
        inputs=inputs,
        outputs=outputs,
        metrics={
            "test_accuracy_pytorch": result.test_accuracy,
            "test_accuracy_onnxruntime": ort_accuracy,
            "validation_accuracy": result.validation_accuracy,
        },
        parity=asdict(parity),
        training={
            "optimizer": f"AdamW(weight_decay={config.weight_decay})",
            "lr_schedule": f"one-cycle, max_lr {config.max_lr}, cosine annealing",
            "epochs": config.epochs,
            "best_epoch": result.best_epoch,
            "batch_size": config.batch_size,
            "seed": config.seed,
            "augmentation": f"random shifts up to {config.shift_px} px"
            if config.shift_px
            else "none",
            "label_smoothing": config.label_smoothing,
            "validation_split": f"last {config.validation_images} training images",
            "train_images_limit": config.train_images_limit,
            "training_time_s": round(result.training_time_s, 1),
            "threads": config.threads,
            "machine": describe_machine(),
            "command": " ".join(["python -m training", *sys.argv[1:]]),
            "history": result.history,
        },
        data_sha256=data_sha256,
        data_source=data_source,
        code_revision=code_revision(),
        model_sha256=file_sha256(model_path),
        opset=OPSET,
        library_versions=library_versions(),
        created=datetime.now(UTC).isoformat(timespec="seconds"),
    )


def check_can_publish(out_dir: Path, model: str) -> None:
    """PublishError now, not after training, if ``out_dir/model`` cannot be made or written.

    Probes the deepest existing directory on the way with a temporary file; creates nothing.
    """
    model_dir = out_dir / model
    try:
        existing = next(path for path in (model_dir, *model_dir.parents) if path.exists())
        if not existing.is_dir():
            raise PublishError(f"cannot publish to {model_dir}: {existing} is not a directory")
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise PublishError(f"cannot publish to {model_dir}: {error}") from error


def publish(result: TrainResult, mnist: Mnist, out_dir: Path) -> Path:
    """Export, check, and move into ``out_dir/<name>/<next version>``; returns that dir."""
    model_dir = out_dir / result.config.model
    model_dir.mkdir(parents=True, exist_ok=True)
    # Stage in a dot-directory (serving ignores non-integer names), then rename atomically.
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=model_dir))
    try:
        export_onnx(result.model, staging / MODEL_FILE)
        images = as_tensor(mnist.test_images).numpy()
        parity, ort_logits = check_parity(result.model, staging / MODEL_FILE, images)
        ort_accuracy = float((ort_logits.argmax(1) == mnist.test_labels).mean())
        for _attempt in range(PUBLISH_ATTEMPTS):
            version = next_version(model_dir)
            card = build_card(
                result,
                staging / MODEL_FILE,
                version,
                parity,
                ort_accuracy,
                mnist.sha256(),
                mnist.source,
            )
            card.write(staging)
            staging.chmod(0o755)  # mkdtemp makes it 0700; a server running as another user reads it
            try:
                staging.rename(model_dir / str(version))
            except OSError:  # another run took this version meanwhile: take the next
                continue
            return model_dir / str(version)
        raise PublishError(f"could not claim a new version directory in {model_dir}")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
