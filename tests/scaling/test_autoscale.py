"""KEDA + HPA scaling rules, checked against hand-computed and documented examples.

The worked examples follow the Kubernetes HPA documentation ("Algorithm
details", "Scaling policies", "Stabilization window") and the KEDA ScaledObject
documentation (activation, cooldown, fallback).
"""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from nats.js import JetStreamContext

from framepipe.core import bus, topology
from framepipe.core.cluster_settings import ScalingSettings, StageScaling
from framepipe.core.topology import SCALED_STAGES, Names
from framepipe.local.natsserver import NatsServer
from framepipe.scaling.autoscale import (
    Autoscaler,
    Policy,
    ScaleEvent,
    StageScaler,
    cap_scaling,
    hpa_desired,
    scale_down_limit,
    scale_up_limit,
)
from framepipe.scaling.jsz import fetch_lags, parse_jsz

QUIET = ScalingSettings(
    min_replicas=1,
    max_replicas=20,
    lag_threshold=10,
    scale_up_stabilization_s=0,
    scale_down_stabilization_s=0,
    scale_up_percent=1000,
    scale_up_pods=100,
    scale_down_percent=100,
)


@pytest.mark.parametrize(
    ("current", "lag", "expected"),
    [
        (10, 200, 20),  # usage ratio 2.0: double
        (4, 43, 4),  # ratio 1.075, inside the 10 % band: no change
        # 44/40 and 1 + 0.1 are the same float64: inside the band under the Kubernetes
        # >= 1.33 rule (1 - down <= ratio <= 1 + up); the older abs(1 - ratio) <= 0.1
        # put it just outside (abs gives 0.10000000000000009).
        (4, 44, 4),
        (4, 45, 5),  # ratio 1.125: ceil(4.5)
        (4, 37, 4),  # ratio 0.925: inside the band
        (4, 35, 4),  # ratio 0.875 is outside, but ceil(3.5) is 4 anyway
        (4, 30, 3),  # ratio 0.75: ceil(3.0)
        (3, 0, 0),  # nothing to do: the HPA would go to 0; min replicas clamps it later
        (1, 1, 1),  # a single message keeps the single replica
    ],
)
def test_hpa_average_value_formula_and_tolerance(current: int, lag: int, expected: int) -> None:
    """desired = ceil(lag / threshold) outside the ±10 % band around the target, else current."""
    assert hpa_desired(current, lag, 10) == expected


def test_hpa_needs_a_running_replica() -> None:
    """The HPA never computes from zero replicas (KEDA activates from zero)."""
    with pytest.raises(ValueError, match="at least one"):
        hpa_desired(0, 10, 10)


def test_scale_up_policies_select_max_change() -> None:
    """Percent 100 and Pods 4 per 15 s (selectPolicy Max): from 1 replica the Pods policy
    wins (5), the period's additions count against the next step, and after the period
    the Percent policy wins (5 → 10)."""
    policies = (Policy("Percent", 100, 15), Policy("Pods", 4, 15))
    assert scale_up_limit(1, [], policies, now=0) == 5
    events = [ScaleEvent(0, +4)]
    assert scale_up_limit(5, events, policies, now=10) == 5  # period start was 1 replica
    assert scale_up_limit(5, events, policies, now=15) == 10  # the event left the window
    assert scale_up_limit(3, [], (Policy("Percent", 50, 60),), now=0) == 5  # ceil(4.5)


def test_scale_down_policies_documented_example() -> None:
    """Kubernetes docs: Pods 4 and Percent 10 per minute, 80 replicas: first step removes
    8 (10 %), at 72 removes 8 (7.2 rounds to 8 removed), and at 40 or fewer the Pods
    policy (4) allows the bigger change."""
    policies = (Policy("Pods", 4, 60), Policy("Percent", 10, 60))
    assert scale_down_limit(80, [], policies, now=0) == 72
    assert scale_down_limit(72, [ScaleEvent(0, -8)], policies, now=30) == 72  # same period: no more
    assert scale_down_limit(72, [ScaleEvent(0, -8)], policies, now=61) == 64
    assert scale_down_limit(40, [], policies, now=0) == 36
    assert scale_down_limit(30, [], policies, now=0) == 26


def test_scale_down_stabilization_window_takes_the_highest_recommendation() -> None:
    """A 60 s scale-down window: after a peak recommendation of 8 the replicas stay at 8
    until that recommendation is older than the window, then follow the lower ones."""
    scaler = StageScaler(dataclasses.replace(QUIET, scale_down_stabilization_s=60))
    assert scaler.decide(0, 4, 80).desired == 8
    held = scaler.decide(30, 8, 20)
    assert held.desired == 8
    assert held.recommendation == 2
    assert held.reason == "stabilization window"
    assert scaler.decide(45, 8, 30).desired == 8
    # t=61: the 8 left the window; the highest left is 3 (t=45).
    assert scaler.decide(61, 8, 10).desired == 3
    assert scaler.decide(106, 3, 10).desired == 1


def test_scale_up_stabilization_window_takes_the_lowest_recommendation() -> None:
    """A 30 s scale-up window damps a one-poll spike: up only as far as the lowest
    recommendation seen within the window."""
    scaler = StageScaler(dataclasses.replace(QUIET, scale_up_stabilization_s=30))
    assert scaler.decide(0, 2, 20).desired == 2
    assert scaler.decide(10, 2, 100).desired == 2  # lowest of {2, 10}
    assert scaler.decide(20, 2, 60).desired == 2
    assert scaler.decide(31, 2, 60).desired == 6  # 2 left the window; lowest of {10, 6, 6}


def test_rate_limit_and_max_replicas_clamp_a_burst() -> None:
    """Default-like policies (Percent 100, Pods 4 per 15 s) take a 1-replica stage to
    5, then 10, then the configured max of 12."""
    settings = dataclasses.replace(
        QUIET, max_replicas=12, scale_up_percent=100, scale_up_pods=4, scale_up_period_s=15
    )
    scaler = StageScaler(settings)
    first = scaler.decide(0, 1, 500)
    assert (first.desired, first.reason) == (5, "scale-up rate limit")
    assert scaler.decide(5, 5, 500).desired == 5
    assert scaler.decide(16, 5, 500).desired == 10
    last = scaler.decide(32, 10, 500)
    assert (last.desired, last.reason) == (12, "max replicas")


def test_activation_from_zero_and_cooldown_back_to_zero() -> None:
    """min 0, activation 5, cooldown 60: lag 5 keeps the stage asleep, lag 6 wakes one
    replica, and it goes back to zero only 60 s after the trigger was last active."""
    settings = dataclasses.replace(QUIET, min_replicas=0, activation_lag_threshold=5, cooldown_period_s=60)
    scaler = StageScaler(settings)
    assert scaler.decide(0, 0, 5).desired == 0
    woke = scaler.decide(10, 0, 6)
    assert (woke.desired, woke.reason) == (1, "activated")
    assert scaler.decide(20, 1, 30).desired == 3
    assert scaler.decide(30, 3, 0).desired == 1  # inactive, HPA floor is 1 until cooldown
    assert scaler.decide(79, 1, 0).desired == 1
    asleep = scaler.decide(80, 1, 0)
    assert (asleep.desired, asleep.reason) == (0, "cooldown elapsed")


def test_min_replicas_is_the_floor_when_idle() -> None:
    """With min 2 an idle stage stays at 2 (no scale to zero)."""
    scaler = StageScaler(dataclasses.replace(QUIET, min_replicas=2))
    assert scaler.decide(0, 5, 0).desired == 2
    assert scaler.decide(100, 2, 0).desired == 2


def test_fallback_after_failed_polls() -> None:
    """KEDA fallback: once more than ``failure_threshold`` polls in a row failed, the HPA
    is fed the metric of ``fallback_replicas``; before that the stage is left alone."""
    scaler = StageScaler(dataclasses.replace(QUIET, fallback_failure_threshold=3, fallback_replicas=4))
    for at in (0, 10, 20):
        assert scaler.decide(at, 2, None).desired == 2
    fallback = scaler.decide(30, 2, None)
    assert (fallback.desired, fallback.reason, fallback.fallback) == (4, "fallback", True)
    assert scaler.decide(40, 4, 10).desired == 1


def test_cap_scaling_holds_every_stage_to_the_local_cap() -> None:
    """On one machine each stage's max (and min, fallback) is capped at the core count."""
    capped = cap_scaling(StageScaling(), 2)
    for stage in SCALED_STAGES:
        s = getattr(capped, stage)
        assert s.max_replicas == 2
        assert s.min_replicas <= 2
        assert s.fallback_replicas <= 2
    assert capped.inference.lag_threshold == StageScaling().inference.lag_threshold


def test_autoscaler_polls_each_stage_on_its_interval_and_applies_changes() -> None:
    """The poller evaluates a stage once per polling interval and calls ``apply`` only on
    a change; every change lands in the timeline."""
    now = [0.0]
    replicas = {"decoder": 1}
    applied: list[tuple[str, int]] = []
    lags = {"decoder": 40}

    def apply(stage: str, count: int) -> None:
        applied.append((stage, count))
        replicas[stage] = count

    scaling = StageScaling(decoder=dataclasses.replace(QUIET, polling_interval_s=5))
    scaler = Autoscaler(
        scaling, lambda: lags, lambda s: replicas[s], apply, stages=("decoder",), clock=lambda: now[0]
    )
    assert [d.desired for d in scaler.step()] == [4]
    now[0] = 2.0
    assert scaler.step() == []  # not due yet
    now[0] = 5.0
    assert [d.desired for d in scaler.step()] == [4]  # within tolerance of 4 × 10
    lags["decoder"] = 0
    now[0] = 10.0
    scaler.step()
    assert applied == [("decoder", 4), ("decoder", 1)]
    assert [(stage, n) for _, stage, n, _, _ in scaler.timeline] == applied


def test_parse_jsz_finds_the_consumer_in_any_account() -> None:
    """The lag is num_pending + num_ack_pending of the named stream/consumer."""
    payload = {
        "account_details": [
            {"name": "SYS", "stream_detail": []},
            {
                "name": "FRAMEPIPE",
                "stream_detail": [
                    {
                        "name": "VIDEO",
                        "consumer_detail": [{"name": "decoder", "num_pending": 7, "num_ack_pending": 2}],
                    }
                ],
            },
        ]
    }
    found = parse_jsz(payload, "VIDEO", "decoder")
    assert found is not None
    assert found.lag == 9
    assert parse_jsz(payload, "VIDEO", "other") is None


async def test_lag_from_a_real_monitoring_endpoint(js: JetStreamContext, nats_server: NatsServer) -> None:
    """Against a real nats-server: 5 GOPs published, 2 fetched but not acked — the decoder's
    lag stays 5 (3 pending + 2 ack-pending), as KEDA would see it."""
    for gop in range(5):
        await bus.publish(js, "video.cam1", b"gop", {}, Names.msg_id("cam1", gop, "gateway"))
    spec = topology.consumer_spec(Names.DECODER)
    sub = await js.pull_subscribe_bind(spec.durable, spec.stream)
    held = await sub.fetch(2, timeout=5)
    assert len(held) == 2
    lags = await asyncio.to_thread(fetch_lags, nats_server.monitor_url)
    assert (lags["decoder"].num_pending, lags["decoder"].num_ack_pending) == (3, 2)
    assert lags["decoder"].lag == 5
    assert lags["inference"].lag == 0
