"""Real ONNX models that misbehave on purpose, steered by marker pixels in the images.

Each is the tiny softmax-regression model of ``tests.support`` (so answers can be
checked with ``tiny_logits``) plus branches keyed on three top-left pixels, taken as
the maximum over the whole batch, as a batch-level bug in a real model would be:

- ``POISON_PIXEL`` >= 0.5: a ``Gather`` indexes out of bounds, ONNX Runtime raises.
- ``SLOW_PIXEL`` = v: a ``Loop`` runs ``v * iterations_per_unit`` matrix products,
  so one batch takes as long as its slowest image asks, whatever the batch size.
- ``MALFORMED_PIXEL`` >= 0.5: the logits come back with no columns (a model whose
  output breaks its contract at run time).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.support import publish_model

POISON_PIXEL = (0, 0)
SLOW_PIXEL = (0, 1)
MALFORMED_PIXEL = (0, 2)
# One Loop iteration: a 96x96 matrix product and a tanh (~0.1 ms on one core).
LOOP_SIDE = 96
DEFAULT_ITERATIONS_PER_UNIT = 20_000


def clean_images(count: int, seed: int = 0) -> np.ndarray:
    """Random images (N, 1, 28, 28) in [0, 1) with every marker pixel at 0."""
    images = np.random.default_rng(seed).random((count, 1, 28, 28), dtype=np.float32)
    for row, column in (POISON_PIXEL, SLOW_PIXEL, MALFORMED_PIXEL):
        images[:, 0, row, column] = 0.0
    return images


def marked(images: np.ndarray, pixel: tuple[int, int], value: float) -> np.ndarray:
    """A copy of ``images`` with ``pixel`` set to ``value`` in every image."""
    copy = images.copy()
    copy[:, 0, pixel[0], pixel[1]] = value
    return copy


def _tiny_weights(seed: int) -> tuple[np.ndarray, np.ndarray]:
    # The same draws as tests.support.write_tiny_model, so tiny_logits checks answers.
    rng = np.random.default_rng(seed)
    weights = rng.normal(0, 0.05, size=(784, 10)).astype(np.float32)
    bias = rng.normal(0, 0.05, size=(10,)).astype(np.float32)
    return weights, bias


def _batch_max_of_pixel(helper: object, pixel: tuple[int, int], out: str) -> list[object]:
    """Nodes computing the scalar max over the batch of one pixel."""
    index = pixel[0] * 28 + pixel[1]
    return [
        helper.make_node("Gather", ["flat", f"{out}_index"], [f"{out}_column"], axis=1),
        helper.make_node("ReduceMax", [f"{out}_column"], [out], keepdims=0),
    ], index


def _loop_body(helper: object, tensor_proto: object, numpy_helper: object) -> object:
    weights = np.random.default_rng(7).normal(0, 0.1, (LOOP_SIDE, LOOP_SIDE)).astype(np.float32)
    return helper.make_graph(
        [
            helper.make_node("Identity", ["condition_in"], ["condition_out"]),
            helper.make_node("MatMul", ["state_in", "loop_weights"], ["product"]),
            helper.make_node("Tanh", ["product"], ["state_out"]),
        ],
        "slow_body",
        [
            helper.make_tensor_value_info("iteration", tensor_proto.INT64, []),
            helper.make_tensor_value_info("condition_in", tensor_proto.BOOL, []),
            helper.make_tensor_value_info("state_in", tensor_proto.FLOAT, [LOOP_SIDE, LOOP_SIDE]),
        ],
        [
            helper.make_tensor_value_info("condition_out", tensor_proto.BOOL, []),
            helper.make_tensor_value_info("state_out", tensor_proto.FLOAT, [LOOP_SIDE, LOOP_SIDE]),
        ],
        initializer=[numpy_helper.from_array(weights, "loop_weights")],
    )


def write_marker_model(
    repo: Path,
    name: str = "marker",
    version: int = 1,
    seed: int = 0,
    iterations_per_unit: int = DEFAULT_ITERATIONS_PER_UNIT,
) -> Path:
    """Publish the marker model at ``repo/name/version`` with a valid model card."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights, bias = _tiny_weights(seed)
    scalar = lambda value, name, dtype=np.float32: numpy_helper.from_array(  # noqa: E731
        np.array(value, dtype=dtype), name
    )
    nodes = [helper.make_node("Flatten", ["input"], ["flat"], axis=1)]
    initializers = [
        numpy_helper.from_array(weights, "weights"),
        numpy_helper.from_array(bias, "bias"),
    ]
    for pixel, out in ((POISON_PIXEL, "poison"), (SLOW_PIXEL, "slow"), (MALFORMED_PIXEL, "bad")):
        pixel_nodes, index = _batch_max_of_pixel(helper, pixel, out)
        nodes += pixel_nodes
        initializers.append(scalar([index], f"{out}_index", np.int64))
    nodes += [
        # Poison: index floor(2 * max) into a 2-element tensor: 0 or 1 fine, 2 out of bounds.
        helper.make_node("Mul", ["poison", "two"], ["poison_scaled"]),
        helper.make_node("Floor", ["poison_scaled"], ["poison_floor"]),
        helper.make_node("Cast", ["poison_floor"], ["poison_at"], to=TensorProto.INT64),
        helper.make_node("Gather", ["zeros_2", "poison_at"], ["poison_zero"], axis=0),
        # Slow: a Loop of floor(max * iterations_per_unit) matrix products.
        helper.make_node("Mul", ["slow", "iterations_per_unit"], ["slow_scaled"]),
        helper.make_node("Floor", ["slow_scaled"], ["slow_floor"]),
        helper.make_node("Cast", ["slow_floor"], ["trip_count"], to=TensorProto.INT64),
        helper.make_node(
            "Loop",
            ["trip_count", "", "loop_start"],
            ["loop_end"],
            body=_loop_body(helper, TensorProto, numpy_helper),
        ),
        helper.make_node("ReduceSum", ["loop_end"], ["loop_sum"], keepdims=0),
        helper.make_node("Mul", ["loop_sum", "zero"], ["slow_zero"]),
        # Malformed: keep 10 columns, or 0 when the marker is set.
        helper.make_node("Less", ["bad", "half"], ["is_good"]),
        helper.make_node("Where", ["is_good", "ten", "none"], ["columns"]),
        helper.make_node("Reshape", ["columns", "one_dim"], ["slice_end"]),
        # logits = x W + b + 0 * (poison and slow branches), first `columns` columns.
        helper.make_node("Gemm", ["flat", "weights", "bias"], ["tiny_logits"]),
        helper.make_node("Add", ["poison_zero", "slow_zero"], ["zero_sum"]),
        helper.make_node("Add", ["tiny_logits", "zero_sum"], ["full_logits"]),
        helper.make_node(
            "Slice", ["full_logits", "slice_start", "slice_end", "slice_axis"], ["logits"]
        ),
    ]
    initializers += [
        scalar(2.0, "two"),
        scalar([0.0, 0.0], "zeros_2"),
        scalar(float(iterations_per_unit), "iterations_per_unit"),
        scalar(np.full((LOOP_SIDE, LOOP_SIDE), 0.01), "loop_start"),
        scalar(0.0, "zero"),
        scalar(0.5, "half"),
        scalar(10, "ten", np.int64),
        scalar(0, "none", np.int64),
        scalar([1], "one_dim", np.int64),
        scalar([0], "slice_start", np.int64),
        scalar([1], "slice_axis", np.int64),
    ]
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 28, 28])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "classes"])],
        initializer=initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return _publish(repo, name, version, seed, model)


def _publish(repo: Path, name: str, version: int, seed: int, model: object) -> Path:
    return publish_model(repo, name, version, model, {"name": "marker", "seed": seed})
