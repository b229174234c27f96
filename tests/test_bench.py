"""The benchmark scripts run on a tiny input and write valid JSON (no timing assertions)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import e2e

pytestmark = pytest.mark.integration


def test_e2e_quick_writes_results(tmp_path: Path, models_dir: Path) -> None:
    """`python -m bench.e2e --quick` completes both sides and records a ratio."""
    out = tmp_path / "e2e.json"
    e2e.main(["--quick", "--out", str(out)])
    result = json.loads(out.read_text())
    assert result["pipeline"]["complete"] is True
    assert result["pipeline"]["frames"] == result["monolith"]["frames"] == 60
    assert result["summary"]["ratio_pipeline_over_monolith"] > 0
    assert set(result["pipeline"]["stage_mean_ms"]) >= {"decoder", "inference", "encoder", "sink"}
