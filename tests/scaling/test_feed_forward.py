"""Feed-forward demand (cameras × cost → replicas) and the shipped defaults on the bundled curve."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest

from framepipe.cli.scale import DEFAULT_STARTUP_S, capacity_warnings, verdict_line
from framepipe.core.cluster_settings import ScalingSettings, StageScaling
from framepipe.core.settings import Settings
from framepipe.core.topology import SCALED_STAGES
from framepipe.scaling.autoscale import Autoscaler, StageScaler
from framepipe.scaling.curves import load_curve
from framepipe.scaling.demand import CameraLoad, demand_document, expected_replicas
from framepipe.scaling.simulator import StageModel, simulate

CURVE = Path(__file__).parents[2] / "bench" / "curves" / "office-day.csv"
#: per-replica GOPs/s as bench/results/scaling.json measured them on the reference machine
#: (analysis: the 2026-12-02 run, one face in view), one row per scaled stage.
RATES = {"decoder": 5.805, "inference": 5.215, "analysis": 2.803, "encoder": 1.624}


def _models() -> dict[str, StageModel]:
    settings = Settings()
    parts = math.ceil(30 / settings.decoder.frames_per_part)
    startup = DEFAULT_STARTUP_S
    assert tuple(RATES) == SCALED_STAGES, "one rate per scaled stage"
    return {
        stage: StageModel(
            RATES[stage],
            parts if stage == "inference" else 1,
            startup[stage],
            held_per_replica=float(settings.consumer(stage).in_flight),
        )
        for stage in SCALED_STAGES
    }


class TestExpectedReplicas:
    """framepipe.scaling.demand.expected_replicas."""

    def test_cameras_over_rate_and_utilization(self) -> None:
        """Four 1-GOP/s cameras on 1.6 GOPs/s encoders at 80 %: 4 / (1.6 × 0.8) = 3.125 replicas."""
        cameras = [CameraLoad(f"cam{i}") for i in range(4)]
        demand = expected_replicas(cameras, {"encoder": 1.6}, StageScaling())
        assert demand == {"encoder": 3.125}
        doc = demand_document(cameras, demand)
        assert doc["stages"]["encoder"] == {"replicas": 3.125, "ceil": 4}
        assert doc["cameras"] == 4

    def test_no_rate_or_feed_forward_off_reports_nothing(self) -> None:
        """A stage without a measured rate, or with feed_forward off, has no demand figure."""
        scaling = StageScaling(decoder=ScalingSettings(feed_forward=False))
        demand = expected_replicas([CameraLoad("a")], {"decoder": 5.0, "encoder": 0.0}, scaling)
        assert demand == {}


class TestFeedForwardScaler:
    """StageScaler with the demand trigger beside the lag trigger."""

    def test_a_new_camera_scales_at_once_and_removal_waits_for_the_window(self) -> None:
        """Demand 3.2 with no lag yet: 4 replicas on the first poll; when the demand drops the
        replicas stay until the scale-down stabilization window has passed."""
        settings = ScalingSettings(scale_down_stabilization_s=120, scale_down_percent=100)
        scaler = StageScaler(settings, feed_forward=True)
        up = scaler.decide(0, 1, 0, 3.2)
        assert (up.desired, up.reason) == (4, "demand")
        assert scaler.decide(10, 4, 0, 0.0).desired == 4
        assert scaler.decide(121, 4, 0, 0.0).desired == 1


class TestOfficeDay:
    """The shipped [scaling.*] defaults on bench/curves/office-day.csv (10 s steps)."""

    def test_feed_forward_is_no_worse_than_lag_only_for_no_more_replica_seconds(self) -> None:
        """Feed-forward + lag: p95 and max backlog age at or below lag-only's, replica-seconds too."""
        curve = load_curve(CURVE)
        models = _models()
        both = simulate(curve, StageScaling(), models, step_s=10.0).summary()
        lag_only = simulate(curve, StageScaling(), models, step_s=10.0, feed_forward=False).summary()
        assert both["backlog_age_s"]["p95"] <= lag_only["backlog_age_s"]["p95"]
        assert both["backlog_age_s"]["max"] <= lag_only["backlog_age_s"]["max"]
        assert both["replica_seconds"] <= lag_only["replica_seconds"]

    def test_defaults_meet_the_target_and_the_old_max_does_not(self) -> None:
        """The defaults keep p95 backlog age within 30 s; the former max of 8 replicas cannot carry
        the encoder's peak, which is both warned about and reported as a miss."""
        curve = load_curve(CURVE)
        models = _models()
        assert verdict_line(simulate(curve, StageScaling(), models, step_s=10.0), 30.0) == ""
        assert capacity_warnings(curve, StageScaling(), models) == []
        old = StageScaling(
            **{s: dataclasses.replace(getattr(StageScaling(), s), max_replicas=8) for s in SCALED_STAGES}
        )
        warnings = capacity_warnings(curve, old, models)
        # ceil(26 GOPs/s / rate): analysis 10, encoder 17 replicas; decoder and inference fit in 8.
        assert [w.split(" (")[0] for w in warnings] == [
            "analysis: max_replicas 8 cannot carry the peak of 26 cameras",
            "encoder: max_replicas 8 cannot carry the peak of 26 cameras",
        ]
        assert "(10 replicas" in warnings[0]
        assert "(17 replicas" in warnings[1]
        assert "p95 backlog age" in verdict_line(simulate(curve, old, models, step_s=10.0), 30.0)


@pytest.mark.parametrize("utilization", [0.0, 1.5])
def test_utilization_is_validated(utilization: float) -> None:
    """feed_forward_utilization outside (0, 1] is a config error naming the field."""
    from framepipe.core.errors import ConfigError

    with pytest.raises(ConfigError, match="feed_forward_utilization"):
        ScalingSettings(feed_forward_utilization=utilization).validate("scaling.decoder")


class TestAutoscalerDemand:
    """Autoscaler with read_demand (what the local supervisor runs)."""

    def test_only_stages_with_a_rate_get_the_demand_trigger(self) -> None:
        """The encoder (with a rate) follows the cameras' demand at once; the decoder (without)
        stays on its lag and is never counted as a failed demand read."""
        counts = {"decoder": 1, "encoder": 1}
        applied: list[tuple[str, int]] = []

        def apply(stage: str, n: int) -> None:
            applied.append((stage, n))
            counts[stage] = n

        autoscaler = Autoscaler(
            StageScaling(),
            lambda: {"decoder": 0, "encoder": 0},
            counts.__getitem__,
            apply,
            stages=("decoder", "encoder"),
            clock=lambda: 0.0,
            read_demand=lambda: {"encoder": 4.2},
            demand_stages=("encoder",),
        )
        autoscaler.step()
        assert applied == [("encoder", 5)]
        assert autoscaler.scalers["decoder"].failures.get("demand") is None
