"""The scaling simulator, the tuner and `framepipe scale` on small, hand-checkable curves."""

from __future__ import annotations

import json
import math
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from framepipe.cli.app import app
from framepipe.core.cluster_settings import ScalingSettings, StageScaling
from framepipe.core.errors import ConfigError
from framepipe.core.loader import load_cluster_config
from framepipe.core.topology import SCALED_STAGES
from framepipe.scaling.curves import LoadCurve, load_curve
from framepipe.scaling.simulator import (
    StageModel,
    compare,
    percentile,
    simulate,
    static_peak,
    weighted_percentile,
)
from framepipe.scaling.tuner import (
    CANDIDATES,
    NOT_SEARCHED,
    TUNED_FIELDS,
    WRITTEN_AS_SIMULATED,
    settings_for,
    tune,
    write_scaling,
)
from tests.helpers import REPO

#: every scaled stage: (GOPs/s per replica, start-up s, static replicas for the 12-GOP/s peak).
TABLE = {
    "decoder": (8.0, 2.0, 2),
    "inference": (2.0, 5.0, 6),
    "analysis": (3.0, 3.0, 4),
    "encoder": (4.0, 2.0, 3),
}
MODELS = {stage: StageModel(gops_per_s=rate, startup_s=up) for stage, (rate, up, _) in TABLE.items()}
STATIC = {stage: replicas for stage, (_, _, replicas) in TABLE.items()}
RATE_ARGS = [arg for stage, (rate, _, _) in TABLE.items() for arg in ("--rate", f"{stage}={rate:g}")]
# Two quiet hours around a one-hour burst, compressed to minutes.
BURST = LoadCurve(((0, 1), (600, 12), (1200, 1)), duration_s=1800, name="burst")
OFFICE_DAY = REPO / "bench" / "curves" / "office-day.csv"


def test_curve_loading_from_csv_hours_and_toml(tmp_path: Path) -> None:
    """CSV with an hour column and option comments, and TOML points, give the same curve."""
    csv_file = tmp_path / "day.csv"
    csv_file.write_text("# fps=25\n# gop_frames=50\n# duration_s=10800\nhour,cameras\n0,2\n1,5\n2.5,3\n")
    toml_file = tmp_path / "day.toml"
    toml_file.write_text(
        "fps = 25\ngop_frames = 50\nduration_s = 10800\n"
        "[[point]]\nt_s = 0\ncameras = 2\n[[point]]\nt_s = 3600\ncameras = 5\n"
        "[[point]]\nhour = 2.5\ncameras = 3\n"
    )
    for curve in (load_curve(csv_file), load_curve(toml_file)):
        assert curve.points == ((0.0, 2.0), (3600.0, 5.0), (9000.0, 3.0))
        assert (curve.fps, curve.gop_frames, curve.duration_s) == (25.0, 50, 10800.0)
        assert curve.gops_per_camera_s == 0.5
        assert [curve.cameras(t) for t in (0, 3599, 3600, 9000, 10000)] == [2, 2, 5, 3, 3]
        assert curve.peak == 5


def test_bad_curves_are_one_line_errors(tmp_path: Path) -> None:
    """Unordered points or a missing column name what is wrong."""
    bad = tmp_path / "bad.csv"
    bad.write_text("t_s,cameras\n10,2\n0,3\n")
    with pytest.raises(ConfigError, match="start at 0 and increase"):
        load_curve(bad)
    bad.write_text("minute,cameras\n0,2\n")
    with pytest.raises(ConfigError, match="t_s or hour column"):
        load_curve(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_curve(tmp_path / "missing.csv")


def test_the_table_covers_every_scaled_stage() -> None:
    """The hand-checked table has one row per stage the topology scales (no stage left out)."""
    assert tuple(TABLE) == SCALED_STAGES


def test_static_peak_keeps_up_with_zero_backlog() -> None:
    """Static replicas sized for the peak (12 cameras at 1 GOP/s: ceil(12 / rate) per stage,
    the table's last column) never build a backlog; GOPs spend one step per stage."""
    static = static_peak(BURST, MODELS)
    assert static == STATIC
    result = simulate(BURST, StageScaling(), MODELS, static=static)
    assert max(max(ages) for ages in result.age.values()) == 0.0
    assert result.replica_seconds() == pytest.approx(sum(STATIC.values()) * 1800)
    assert weighted_percentile(result.latency, 100) == pytest.approx(1.0)
    served = sum(w for _, w in result.latency)
    sent = sum(BURST.cameras(t) * BURST.gops_per_camera_s for t in range(1800))
    assert served == pytest.approx(sent, rel=1e-6)  # the fluid loses nothing


def test_under_provisioned_stage_builds_a_backlog_that_ages() -> None:
    """One inference replica (2 GOP/s) against 12 GOP/s: the backlog grows by 10 GOPs a
    second during the burst, so the oldest GOP waits for minutes."""
    fixed = dict(STATIC, inference=1)
    result = simulate(BURST, StageScaling(), MODELS, static=fixed)
    assert max(result.lag["inference"]) > 5000
    assert max(result.age["inference"]) > 600
    assert max(result.age["decoder"]) == 0.0


def test_replicas_of_every_stage_share_the_machines_cores() -> None:
    """Static peak's 15 replicas on 3 shared cores serve at a fifth of their speed: a backlog
    builds where the unshared run has none, and the pipeline delivers only what 3 cores can."""
    alone = simulate(BURST, StageScaling(), MODELS, static=STATIC)
    shared = simulate(BURST, StageScaling(), MODELS, static=STATIC, cores=3.0)
    roomy = simulate(BURST, StageScaling(), MODELS, static=STATIC, cores=64.0)
    assert max(max(a) for a in roomy.age.values()) == 0.0  # more cores than replicas: no limit
    assert max(max(a) for a in alone.age.values()) == 0.0
    assert max(max(a) for a in shared.age.values()) > 300
    # Twelve cameras for 10 minutes: decoder (2) and inference (6) are saturated, analysis and
    # encoder busy x/3 and x/4 of a replica at throughput x; each working replica gets
    # 3 / (8 + 7x/12) of a core, so x = 6 × 2 × that share: 7x²/12 + 8x - 36 = 0.
    flat = LoadCurve(((0, 12),), duration_s=600, name="flat")
    delivered = simulate(flat, StageScaling(), MODELS, static=STATIC, cores=3.0).latency
    expected = (-8 + math.sqrt(64 + 4 * 7 / 12 * 36)) / (2 * 7 / 12)
    assert sum(gops for _, gops in delivered) / 600 == pytest.approx(expected, rel=0.02)


def test_autoscaled_burst_uses_fewer_replica_seconds_than_static_peak() -> None:
    """KEDA + HPA rules follow the burst: up during it, down after, cheaper than static."""
    scaling = settings_for(BURST, MODELS, target_age_s=10)
    auto, fixed = compare(BURST, scaling, MODELS)
    assert max(auto.replicas["inference"]) >= 6
    assert auto.replicas["inference"][-1] < max(auto.replicas["inference"])
    assert auto.replica_seconds() < fixed.replica_seconds()
    sent = sum(BURST.cameras(t) * BURST.gops_per_camera_s for t in range(1800))
    backlog = sum(auto.lag[s][-1] / MODELS[s].messages_per_gop for s in auto.lag)
    assert sum(w for _, w in auto.latency) + backlog == pytest.approx(sent, rel=1e-6)


def test_percentiles() -> None:
    """Nearest-rank and weighted percentiles on hand-checked data."""
    assert percentile([5, 1, 3, 2, 4], 50) == 3
    assert percentile([5, 1, 3, 2, 4], 95) == 5
    assert percentile([], 95) == 0.0
    assert weighted_percentile([(1.0, 9.0), (10.0, 1.0)], 90) == 1.0
    assert weighted_percentile([(1.0, 9.0), (10.0, 1.0)], 95) == 10.0


def test_tuner_meets_the_target_and_writes_the_config(tmp_path: Path) -> None:
    """The tuned settings keep p95 backlog age within the target on the burst, and written
    into a config they keep its other tables and load back as the same settings."""
    tuning = tune(BURST, MODELS, target_age_s=8)
    assert tuning.met, tuning.steps
    assert tuning.result.summary()["backlog_age_s"]["p95"] <= 8
    config = tmp_path / "framepipe.toml"
    config.write_text(
        '# site config\n[k8s]\nnamespace = "office"\n\n[scaling.inference]\nmax_replicas = 99\n'
    )
    write_scaling(config, tuning.scaling, "tuned for burst")
    text = config.read_text()
    assert "# site config" in text
    assert tomllib.loads(text)["k8s"]["namespace"] == "office"
    loaded = load_cluster_config(config).scaling
    for stage in SCALED_STAGES:
        assert getattr(loaded, stage) == getattr(tuning.scaling, stage)
        assert getattr(loaded, stage).gops_per_replica == MODELS[stage].gops_per_s
    written = tomllib.loads(text)["scaling"]["inference"]
    assert set(TUNED_FIELDS + WRITTEN_AS_SIMULATED) <= set(written)


def test_tuner_tightens_when_no_candidate_meets_a_tight_target() -> None:
    """Inference replicas that take two minutes to start cannot absorb a sudden jump from
    1 to 12 cameras within 2 s: no candidate meets it, so the tuner tightens the closest
    one (lower thresholds, bigger steps, higher minimum) and says so."""
    slow = dict(MODELS, inference=StageModel(gops_per_s=2.0, startup_s=120.0))
    jump = LoadCurve(((0, 1), (60, 12)), duration_s=600, name="jump")
    tuning = tune(jump, slow, target_age_s=2, max_rounds=3)
    assert not tuning.met
    assert any("tightening" in step for step in tuning.steps)
    tightened = [step for step in tuning.steps if step.startswith("inference: ")]
    assert len(tightened) == 3, tuning.steps


def test_tuner_reports_each_simulation_as_it_finishes() -> None:
    """`on_step` gets every line of `steps` that ends a simulation, in order, with how many
    simulations are done and planned (what `scale tune` shows as its progress)."""
    calls: list[tuple[str, int, int]] = []
    tuning = tune(
        BURST, MODELS, target_age_s=8, on_step=lambda line, done, planned: calls.append((line, done, planned))
    )
    assert [line for line, _, _ in calls] == tuning.steps[: len(calls)]
    assert [done for _, done, _ in calls] == list(range(1, len(calls) + 1))
    assert len(calls) == len(CANDIDATES)
    assert {planned for _, _, planned in calls} == {len(CANDIDATES)}
    slow = dict(MODELS, inference=StageModel(gops_per_s=2.0, startup_s=120.0))
    jump = LoadCurve(((0, 1), (60, 12)), duration_s=600, name="jump")
    tightened: list[tuple[str, int, int]] = []
    tune(jump, slow, target_age_s=2, max_rounds=3, on_step=lambda *call: tightened.append(call))
    assert len(tightened) == len(CANDIDATES) + 3
    assert tightened[-1][1:] == (len(CANDIDATES) + 3, len(CANDIDATES) + 3)


def test_office_day_curve_ships_and_is_volatile() -> None:
    """The shipped curve covers a day with a night trough, a peak and sudden spikes."""
    curve = load_curve(OFFICE_DAY)
    assert curve.duration_s == 86400
    assert min(c for _, c in curve.points) <= 2
    assert curve.peak >= 20
    jumps = [abs(b[1] - a[1]) for a, b in zip(curve.points, curve.points[1:], strict=False)]
    assert max(jumps) >= 6


def test_scale_cli_simulate_and_tune(tmp_path: Path) -> None:
    """`framepipe scale simulate` and `tune --write` write JSON + PNG and the config."""
    curve = tmp_path / "burst.csv"
    curve.write_text("# duration_s=1800\nt_s,cameras\n0,1\n600,12\n1200,1\n")
    rates = RATE_ARGS
    runner = CliRunner()
    result = runner.invoke(
        app,
        ["scale", "simulate", "--curve", str(curve), *rates, "--target-age", "10", "--out", str(tmp_path)],
    )
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "scale-sim-burst.json").read_text())
    assert report["static_replicas"] == STATIC
    assert report["replica_seconds_ratio"] > 0
    assert (tmp_path / "scale-sim-burst.png").read_bytes()[:4] == b"\x89PNG"
    # The same settings on one shared core cannot carry 12 cameras: the verdict says so.
    result = runner.invoke(
        app,
        ["scale", "simulate", "--curve", str(curve), *rates, "--cores", "1", "--out", str(tmp_path)],
    )
    assert result.exit_code == 1, result.output
    assert "MISSES the target" in result.output

    config = tmp_path / "framepipe.toml"
    result = runner.invoke(
        app,
        [
            "scale",
            "tune",
            "--curve",
            str(curve),
            *rates,
            "--target-age",
            "8",
            "--config",
            str(config),
            "--write",
            "--out",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    tuned = json.loads((tmp_path / "scale-tune-burst.json").read_text())
    printed = " ".join(result.output.split())  # CliRunner's console wraps at 80 columns
    for line in tuned["tuning_steps"]:  # each once: printed while it ran, not again at the end
        assert printed.count(" ".join(line.split())) == 1, result.output
    assert tuned["met"] is True
    assert tuned["autoscaled"]["backlog_age_s"]["p95"] <= 8
    written = load_cluster_config(config).scaling.inference
    assert written.lag_threshold == tuned["scaling"]["inference"]["lag_threshold"]
    assert isinstance(written, ScalingSettings)
    assert written.gops_per_replica == TABLE["inference"][0]  # feed-forward on in the cluster
    assert " ".join(NOT_SEARCHED.split()) in printed  # which fields it leaves alone, and why


def test_scale_cli_without_throughput_says_what_to_do(tmp_path: Path) -> None:
    """No measured throughput and no --rate: one line pointing at `make bench`."""
    curve = tmp_path / "c.csv"
    curve.write_text("t_s,cameras\n0,1\n")
    result = CliRunner().invoke(
        app, ["scale", "simulate", "--curve", str(curve), "--throughput", str(tmp_path / "none.json")]
    )
    assert result.exit_code == 2
    assert "make bench" in result.output
