"""`bench.inference` runs both sides on a tiny input and writes valid JSON (no timing assertions)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import inference

pytestmark = pytest.mark.integration


def test_inference_bench_writes_results(tmp_path: Path, models_dir: Path) -> None:
    """Both sides finish on the same frames, the stage run between two bare passes; the
    sweep, the per-step breakdown, the CPU accounting and the PNG plot are all written."""
    out = tmp_path / "inference.json"
    inference.main(["--frames", "64", "--frames-per-message", "16", "--repeats", "1", "--out", str(out)])
    result = json.loads(out.read_text())
    assert result["stage"]["complete"] is True
    assert result["stage"]["frames"] == result["bare"]["frames"] == 64
    assert result["summary"]["ratio_stage_over_bare"] > 0
    # one stage run between two bare passes: one paired ratio, and it is the headline
    assert len(result["bare"]["fps_samples"]) == 2
    assert result["summary"]["paired_ratios"] == [result["summary"]["ratio_stage_over_bare"]]
    assert set(result["sweep"]) == {"1", "4", "8", "16", "32"}
    assert "1" in result["sweep_by_threads"]
    assert all(set(t) == set(result["sweep"]) for t in result["sweep_by_threads"].values())
    assert set(result["breakdown"]) >= {"msgpack_decode", "preprocess", "model", "postprocess"}
    assert result["breakdown"]["model"] > 0
    assert set(result["stage"]["cpu_ms_per_frame"]) == {"stage", "nats_server"}
    assert result["stage"]["cpu_ms_per_frame"]["stage"] > 0
    assert "skipped" in result["gpu"] or "tensorrt_fp16" in result["gpu"]
    png = out.with_suffix(".png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
