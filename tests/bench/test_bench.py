"""The benchmark scripts run on a tiny input and write valid JSON (no timing assertions)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench import bus, codec, e2e, latency, run_all, scaling
from framepipe.core.topology import SCALED_STAGES

pytestmark = pytest.mark.integration

TINY_CLIP = ["--resolution", "360p", "--seconds", "1", "--gop", "15"]


def _read(path: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(path.read_text())
    assert {"benchmark", "command", "machine", "params", "summary"} <= set(result)
    assert len(result["machine"]["loadavg"]) == 3
    return result


def test_e2e_tiny_writes_results(tmp_path: Path, models_dir: Path) -> None:
    """`bench.e2e` completes both sides on one camera (real-time trials: see the latency test)."""
    out = tmp_path / "e2e.json"
    e2e.main([*TINY_CLIP, "--cameras", "1", "--max-cameras", "0", "--out", str(out)])
    result = _read(out)
    assert result["pipeline"]["complete"] is True
    assert result["pipeline"]["frames"] == result["monolith"]["frames"] == 30
    assert result["summary"]["ratio_pipeline_over_monolith"] > 0
    assert set(result["pipeline"]["stage_mean_ms"]) >= {"decoder", "inference", "encoder", "sink"}
    assert result["summary"]["realtime_cameras_tried"] == 0


def test_codec_tiny_writes_results(tmp_path: Path, models_dir: Path) -> None:
    """`bench.codec` times bare PyAV/libx264 and both codec stages on the same GOPs."""
    out = tmp_path / "codec.json"
    codec.main(
        ["--resolutions", "360p", "--gops", "15", "--seconds", "1", "--repeats", "1", "--out", str(out)]
    )
    (case,) = _read(out)["cases"]
    assert case["clip"]["frames"] == 30
    for kind in ("decoder", "encoder"):
        assert case[kind]["stage"]["complete"] is True
        assert case[kind]["stage"]["busy_s"] > 0  # the stage's own gop.done events were found
        assert case[kind]["ratio_stage_over_bare"] > 0
    assert len(case["decoder"]["bare"]["decode_letterbox_s"]) == 2  # before and after the stage


def test_bus_tiny_writes_results_and_table(tmp_path: Path) -> None:
    """`bench.bus` measures latency on both storages and throughput; run_all tabulates it."""
    out = tmp_path / "bus.json"
    argv = ["--count", "3", "--tp-count", "4", "--sizes", "1024", "--cases", "encode 30"]
    bus.main([*argv, "--idle-count", "2", "--idle-rate", "20", "--out", str(out)])
    result = _read(out)
    for storage in ("file", "memory"):
        (row,) = result["storage"][storage]["latency"]
        assert row["publish_to_fetch_ms"]["n"] == 3  # JetStream: every message, always
        # Core NATS is at-most-once; on a busy machine the baseline may lose one, and says so.
        assert row["core_nats_ms"]["n"] + row["core_nats_lost"] == 3
        assert row["core_nats_ms"]["n"] >= 1
        (tp,) = result["storage"][storage]["throughput"]
        assert tp["messages"] == 4
    assert result["storage"]["file"]["latency"][0]["idle_publish_to_runner_fetch_ms"]["n"] == 2
    assert "| bus | file encode 30 publish→fetch" in run_all.table(tmp_path)


def test_scaling_tiny_writes_tuner_key_path(tmp_path: Path, models_dir: Path) -> None:
    """`bench.scaling` writes summary.per_replica.<stage>.gops_per_s, which `scale tune` reads."""
    out = tmp_path / "scaling.json"
    scaling.main([*TINY_CLIP, "--cameras", "1", "--max-replicas", "1", "--out", str(out)])
    result = _read(out)
    assert result["summary"]["complete"] is True
    assert result["params"]["gop_frames"] == 15
    for stage in SCALED_STAGES:  # every stage the tuner and the feed-forward demand need
        per = result["summary"]["per_replica"][stage]
        assert isinstance(per["gops_per_s"], float)
        assert per["gops_per_s"] > 0
        assert per["frames_per_s"] > 0
        assert result["summary"]["efficiency"][stage] == {"1": 1.0}


def test_latency_tiny_writes_results(tmp_path: Path, models_dir: Path) -> None:
    """`bench.latency` measures every GOP of a real-time camera and splits wait from work.

    The same real-time trial is what `bench.e2e` repeats with more cameras.
    """
    out = tmp_path / "latency.json"
    latency.main([*TINY_CLIP, "--out", str(out)])
    result = _read(out)
    trial = result["realtime"]
    assert trial["complete"] is True
    assert trial["latency_s"]["n"] == 2
    assert set(trial["breakdown"]) == {"decoder", "inference", "analysis", "encoder", "sink"}
    assert all(stage["work_s"] > 0 for stage in trial["breakdown"].values())
    assert result["summary"]["ratio_p50_over_monolith_gop"] > 0


def test_selection_tiny_writes_results(tmp_path: Path) -> None:
    """`bench.selection` counts what the decoder letterboxes and publishes at detect_fps = 5."""
    from bench import selection

    out = tmp_path / "selection.json"
    selection.main(["--resolutions", "360p", "--seconds", "1", "--repeats", "1", "--out", str(out)])
    summary = _read(out)["summary"]["360p"]
    assert summary["letterboxed_frames"] == {"every": 30, "selected": 5}
    assert summary["bus_bytes_factor"] == pytest.approx(6.0, rel=0.01)


def test_envelope_cost_tiny_writes_every_kind_against_its_floor(tmp_path: Path) -> None:
    """`bench.envelope_cost` times the five messages of a GOP and the bare library beside each."""
    from bench import envelope_cost

    out = tmp_path / "envelope_cost.json"
    envelope_cost.main(["--loops", "3", "--repeats", "1", "--out", str(out)])
    result = _read(out)
    assert [row["decoded_per_gop"] for row in result["rows"]] == [2, 1, 1, 1, 1]
    assert all(row["decode_us"] > 0 and row["floor_decode_us"] > 0 for row in result["rows"])
    assert result["summary"]["ratio_to_floor"] > 0


def test_encoder_presets_tiny_writes_results(tmp_path: Path) -> None:
    """`bench.encoder_presets` times every preset/tune/threads configuration against the default."""
    from bench import encoder_presets

    out = tmp_path / "presets.json"
    encoder_presets.main(["--resolutions", "360p", "--seconds", "1", "--rounds", "1", "--out", str(out)])
    rows = _read(out)["summary"]["360p"]
    assert set(rows) == {c.label for c in encoder_presets.CONFIGS}
    assert rows["veryfast t1"]["speed_vs_default"] == 1.0
    assert all(r["kbit_s"] > 0 and r["psnr_y_db"] > 25 for r in rows.values())


def test_frames_bytes_tiny_writes_every_layout_against_todays(tmp_path: Path) -> None:
    """`bench.frames_bytes` sends each FRAMES layout through a real work queue and sizes it."""
    from bench import frames_bytes

    out = tmp_path / "frames_bytes.json"
    frames_bytes.main(["--batches", "3", "--repeats", "1", "--out", str(out)])
    rows = _read(out)["cpu_ms_per_batch"]
    assert set(rows) == set(frames_bytes.LAYOUTS)
    assert rows["letterboxed-rgb"]["ratio_to_letterboxed"] == 1.0
    sizes = [
        rows[name]["body_bytes"] for name in ("letterboxed-rgb", "picture-rgb", "picture-yuv420", "no-pixels")
    ]
    assert sizes == sorted(sizes, reverse=True)
    assert sizes[0] > 5 * 192 * 192 * 3
    assert all(row["client_ms"] > 0 for row in rows.values())
