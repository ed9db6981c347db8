"""Served accuracy, counted per model and input path, mergeable across Locust workers.

Every path is checked image by image against its offline ONNX Runtime answer
(``agreed``). The accuracy columns compare the served labels with the true labels,
next to the offline raw-pixel accuracy on the same images: for PNG uploads, which
go through the server's picture preprocessing (crop to ink, scale to 20x20, centre
of mass), the difference is what that preprocessing costs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

RAW = "raw pixels"
PNG = "png"


@dataclass
class Counts:
    images: int = 0
    served_correct: int = 0  # served label == true label
    offline_correct: int = 0  # offline ORT label on raw pixels == true label, same images
    agreed: int = 0  # served label accepted by the offline check of its path

    def add(self, other: Counts) -> None:
        self.images += other.images
        self.served_correct += other.served_correct
        self.offline_correct += other.offline_correct
        self.agreed += other.agreed


@dataclass
class Tally:
    """Counts keyed by (model, path kind); ``to_wire``/``merge_wire`` carry them to the master."""

    counts: dict[tuple[str, str], Counts] = field(default_factory=dict)

    def record(self, model: str, path: str, *, served: int, true: int, offline: int) -> None:
        counts = self.counts.setdefault((model, path), Counts())
        counts.images += 1
        counts.served_correct += served == true
        counts.offline_correct += offline == true

    def record_agreement(self, model: str, path: str) -> None:
        self.counts.setdefault((model, path), Counts()).agreed += 1

    def to_wire(self) -> dict[str, list[int]]:
        return {
            f"{model}\t{path}": [c.images, c.served_correct, c.offline_correct, c.agreed]
            for (model, path), c in self.counts.items()
        }

    def merge_wire(self, wire: dict[str, list[int]]) -> None:
        for key, values in wire.items():
            model, path = key.split("\t", 1)
            self.counts.setdefault((model, path), Counts()).add(Counts(*values))

    def clear(self) -> None:
        self.counts.clear()

    def rows(self) -> list[dict[str, object]]:
        """One summary row per (model, path): accuracies in percent, drop in points."""
        rows = []
        for (model, path), c in sorted(self.counts.items()):
            served = 100.0 * c.served_correct / c.images
            offline = 100.0 * c.offline_correct / c.images
            rows.append(
                {
                    "model": model,
                    "path": path,
                    "images": c.images,
                    "served_accuracy": round(served, 3),
                    "offline_accuracy": round(offline, 3),
                    "drop_points": round(offline - served, 3),
                    "agreement": round(100.0 * c.agreed / c.images, 3),
                }
            )
        return rows
