"""Accuracy counts add up across workers and summarise per model and input path."""

from __future__ import annotations

import pytest

from loadtest.mix import parse_mix
from loadtest.tally import PNG, RAW, Tally


def test_worker_tallies_merge_into_the_masters_rows() -> None:
    worker_a, worker_b, master = Tally(), Tally(), Tally()
    worker_a.record("mnist_mlp", RAW, served=3, true=3, offline=3)
    worker_a.record_agreement("mnist_mlp", RAW)
    worker_b.record("mnist_mlp", RAW, served=5, true=3, offline=3)
    worker_b.record("mnist_mlp", PNG, served=1, true=1, offline=7)

    master.merge_wire(worker_a.to_wire())
    master.merge_wire(worker_b.to_wire())

    assert master.rows() == [
        {"model": "mnist_mlp", "path": PNG, "images": 1, "served_accuracy": 100.0,
         "offline_accuracy": 0.0, "drop_points": -100.0, "agreement": 0.0},
        {"model": "mnist_mlp", "path": RAW, "images": 2, "served_accuracy": 50.0,
         "offline_accuracy": 100.0, "drop_points": 50.0, "agreement": 50.0},
    ]  # fmt: skip


def test_mix_keeps_positive_weights_in_order() -> None:
    assert parse_mix("json=40, png=0,v2_uint8=2.5") == (["json", "v2_uint8"], [40.0, 2.5])


@pytest.mark.parametrize("text", ["jsn=1", "json", "json=0", ""])
def test_mix_without_a_known_positive_kind_is_an_error(text: str) -> None:
    with pytest.raises(ValueError, match="--mix"):
        parse_mix(text)
