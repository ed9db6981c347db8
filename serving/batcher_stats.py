"""The batcher's cumulative counters, in the shape the KServe V2 statistics extension reports.

The batcher adds to them once a request and once a batch; ``api/v2_info.py`` reads them.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class DurationStat:
    """A count and total duration, as the V2 statistics extension reports them."""

    count: int = 0
    ns: int = 0

    def add(self, seconds: float, count: int = 1) -> None:
        self.count += count
        self.ns += int(seconds * 1e9)


@dataclass
class ComputeStats:
    """A batch's compute time split as Triton splits it: assembling the input tensor from
    the requests' images, the ONNX Runtime call, handing each request its rows."""

    compute_input: DurationStat = field(default_factory=DurationStat)
    compute_infer: DurationStat = field(default_factory=DurationStat)
    compute_output: DurationStat = field(default_factory=DurationStat)

    def add(self, input_s: float, infer_s: float, output_s: float) -> None:
        self.compute_input.add(input_s)
        self.compute_infer.add(infer_s)
        self.compute_output.add(output_s)


@dataclass
class BatcherStats(ComputeStats):
    """Cumulative counters, kept by the batcher itself (read by the V2 stats endpoint)."""

    success: DurationStat = field(default_factory=DurationStat)
    fail: DurationStat = field(default_factory=DurationStat)
    queue: DurationStat = field(default_factory=DurationStat)
    inference_count: int = 0
    execution_count: int = 0
    last_inference_ms: int = 0
    batch_sizes: dict[int, ComputeStats] = field(default_factory=dict)
