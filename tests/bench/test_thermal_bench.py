"""`bench.thermal` runs on a few repeats and writes valid JSON (no timing assertions)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import thermal

pytestmark = pytest.mark.integration


def test_thermal_tiny_writes_results(tmp_path: Path) -> None:
    """Fever per face, thermal GOP decode and the alignment baseline, each measured and positive."""
    out = tmp_path / "thermal.json"
    thermal.main(["--repeats", "2", "--passes", "1", "--out", str(out)])
    result = json.loads(out.read_text())
    assert {"benchmark", "command", "machine", "params", "summary"} <= set(result)
    summary = result["summary"]
    assert summary["fever_read_ms_per_face_p50"] > 0
    assert summary["dlib_align_ms_per_face_p50"] > 0
    assert summary["fever_over_align"] > 0
    assert result["fever_ms"]["n"] == 2
