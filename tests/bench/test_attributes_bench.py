"""`bench.attributes` runs on its real GOP with both attributes and writes valid JSON (no timing asserts)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import attributes

pytestmark = pytest.mark.integration


def test_attributes_bench_writes_costs_and_the_on_off_ratio(tmp_path: Path, models_dir: Path) -> None:
    """One pass: both attributes read all 5 faces, costs per face and the ratio are there."""
    out = tmp_path / "attributes.json"
    attributes.main(["--repeats", "1", "--out", str(out)])
    result = json.loads(out.read_text())
    summary = result["summary"]
    assert summary["faces_with_a_reading"] == {"mask": 5, "fever": 5}
    assert summary["mask_ms_per_face"] > 0
    assert summary["fever_ms_per_face"] > 0
    assert summary["on_vs_off_throughput"] > 0
    assert len(summary["paired"]) == 1
