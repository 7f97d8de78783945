"""Refactors must not change what training computes: same data, start and seed, same bits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.lr import weights_scenarios

RECORDED = json.loads((Path(__file__).parent / "data" / "weights_before_issue9.json").read_text())


def test_every_scenario_was_recorded():
    assert set(RECORDED) == set(weights_scenarios.SCENARIOS)


@pytest.mark.parametrize("name", sorted(weights_scenarios.SCENARIOS))
def test_weights_are_bit_identical_to_the_recording(name):
    """Recorded at d267d65 (before issue 9) with ``python -m tests.lr.weights_scenarios``."""
    assert weights_scenarios.run(name) == RECORDED[name]
