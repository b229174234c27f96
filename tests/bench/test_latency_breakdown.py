"""``bench.latency.breakdown``: per-stage wait and work from the stages' ``gop.done`` log lines."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bench.latency import breakdown

CAPTURED = 1_000_000.0


def _line(camera: str, gop: int, stage: str, end: float, duration_s: float) -> str:
    stamp = datetime.fromtimestamp(CAPTURED + end, UTC).isoformat().replace("+00:00", "Z")
    return json.dumps(
        {
            "event": "gop.done",
            "camera": camera,
            "gop": gop,
            "stage": stage,
            "duration_ms": duration_s * 1000,
            "timestamp": stamp,
        }
    )


class TestBreakdown:
    def test_overlay_gop_chains_through_analysis_without_the_encoder(self, tmp_path: Path) -> None:
        """An overlay GOP's chain is decoder → inference → analysis → sink; no encoder row."""
        log = tmp_path / "stages.log"
        log.write_text(
            "\n".join(
                [
                    _line("c0", 0, "decoder", 0.10, 0.05),
                    _line("c0", 0, "inference", 0.30, 0.10),
                    _line("c0", 0, "analysis", 0.45, 0.05),
                    _line("c0", 0, "sink", 0.60, 0.02),
                ]
            )
        )
        result = breakdown([log], {("c0", 0): CAPTURED}, ["c0"])
        assert list(result) == ["decoder", "inference", "analysis", "sink"]
        assert result["decoder"] == {"wait_s": pytest.approx(0.05), "work_s": pytest.approx(0.05)}
        assert result["inference"]["wait_s"] == pytest.approx(0.10)
        assert result["analysis"] == {"wait_s": pytest.approx(0.10), "work_s": pytest.approx(0.05)}
        assert result["sink"] == {"wait_s": pytest.approx(0.13), "work_s": pytest.approx(0.02)}

    def test_burn_in_gop_has_every_stage_and_parts_span_first_start_to_last_end(self, tmp_path: Path) -> None:
        """A burn-in GOP passes the encoder; a stage's two parts count as one span."""
        log = tmp_path / "stages.log"
        log.write_text(
            "\n".join(
                [
                    _line("c0", 3, "decoder", 0.10, 0.10),
                    _line("c0", 3, "inference", 0.20, 0.05),
                    _line("c0", 3, "inference", 0.30, 0.05),
                    _line("c0", 3, "analysis", 0.35, 0.05),
                    _line("c0", 3, "encoder", 0.80, 0.40),
                    _line("c0", 3, "sink", 0.90, 0.05),
                ]
            )
        )
        result = breakdown([log], {("c0", 3): CAPTURED}, ["c0"])
        assert list(result) == ["decoder", "inference", "analysis", "encoder", "sink"]
        assert result["inference"] == {"wait_s": pytest.approx(0.05), "work_s": pytest.approx(0.15)}
        assert result["encoder"] == {"wait_s": pytest.approx(0.05), "work_s": pytest.approx(0.40)}

    def test_gop_the_sink_never_wrote_and_other_cameras_are_left_out(self, tmp_path: Path) -> None:
        """Only the trial's cameras' GOPs that reached the sink count."""
        log = tmp_path / "stages.log"
        log.write_text(
            "\n".join(
                [
                    _line("c0", 0, "decoder", 0.10, 0.05),
                    _line("c0", 0, "inference", 0.30, 0.10),
                    _line("warm", 0, "decoder", 0.10, 0.05),
                    _line("warm", 0, "sink", 0.20, 0.05),
                ]
            )
        )
        captured = {("c0", 0): CAPTURED, ("warm", 0): CAPTURED}
        assert breakdown([log], captured, ["c0"]) == {}
