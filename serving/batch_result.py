"""What a request gets back from the batcher: its rows of a batch's outputs, and timings.

Its own module so the routers and codecs that read a result need not import the batching
machinery that produces it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

RowFunction = Callable[[np.ndarray], np.ndarray]


class BatchOutputs:
    """One batch's outputs, shared by its requests.

    numpy charges its few microseconds a call as much for one row as for 64, so what a
    codec derives row by row from the outputs (a softmax, say) is worth computing once
    for the whole batch: see :meth:`BatchResult.derived`.
    """

    __slots__ = ("_derived", "outputs")

    def __init__(self, outputs: np.ndarray) -> None:
        self.outputs = outputs
        self._derived: dict[RowFunction, np.ndarray] = {}

    def derived(self, function: RowFunction) -> np.ndarray:
        """``function(outputs)``, computed on the first call and kept for the others."""
        value = self._derived.get(function)
        if value is None:
            value = self._derived[function] = function(self.outputs)
        return value


@dataclass(frozen=True)
class BatchResult:
    """A request's outputs and where its time went."""

    outputs: np.ndarray
    queue_s: float
    compute_s: float
    batch_images: int
    # The whole batch's outputs, and this request's rows of them.
    batch: BatchOutputs | None = None
    rows: slice | None = None

    def derived(self, function: RowFunction) -> np.ndarray:
        """``function(outputs)``, computed once for the whole batch and sliced to this
        request's rows. ``function`` must work row by row: row i of its result depends
        on row i of the outputs alone."""
        if self.batch is None or self.rows is None:
            return function(self.outputs)
        return self.batch.derived(function)[self.rows]
