"""Kubernetes HPA test cases, ported to framepipe's autoscaler (KEDA's are in
``test_upstream_keda.py``).

Each test is named after the upstream test it ports; parametrised cases carry the
upstream case name as their id where upstream names its cases: kubernetes/kubernetes
``pkg/controller/podautoscaler/horizontal_test.go`` and ``replica_calculator_test.go``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from framepipe.scaling.autoscale import (
    Policy,
    ScaleEvent,
    StageScaler,
    Tolerances,
    hpa_desired,
    scale_down_limit,
    scale_up_limit,
)
from tests.scaling.test_upstream_keda import WIDE


# -- Kubernetes HPA --------------------------------------------------------------
class TestHorizontal:
    """kubernetes/kubernetes pkg/controller/podautoscaler/horizontal_test.go."""

    def test_scale_up_rc_immediately(self) -> None:
        """TestScaleUpRCImmediately: below minReplicas (1 < 2) is corrected at once, even when
        the metric cannot be read."""
        scaler = StageScaler(dataclasses.replace(WIDE, min_replicas=2))
        decision = scaler.decide(0, 1, None)
        assert (decision.desired, decision.reason) == (2, "below min replicas")

    def test_scale_down_rc_immediately(self) -> None:
        """TestScaleDownRCImmediately: above maxReplicas (12 > 5) is corrected at once, even when
        the metric cannot be read."""
        scaler = StageScaler(dataclasses.replace(WIDE, max_replicas=5, fallback_replicas=2))
        decision = scaler.decide(0, 12, None)
        assert (decision.desired, decision.reason) == (5, "above max replicas")

    def test_scale_up_one_metric_invalid(self) -> None:
        """TestScaleUpOneMetricInvalid: the demand trigger fails, the lag wants 3 → 6: scale up."""
        scaler = StageScaler(WIDE, feed_forward=True)
        assert scaler.decide(0, 3, 60, None).desired == 6

    def test_no_scale_down_one_metric_invalid(self) -> None:
        """TestNoScaleDownOneMetricInvalid: the demand trigger fails and the lag wants fewer: hold."""
        scaler = StageScaler(WIDE, feed_forward=True)
        decision = scaler.decide(0, 5, 10, None)
        assert (decision.desired, decision.reason) == (5, "metric unavailable")

    def test_scale_up_both_metrics_empty(self) -> None:
        """TestScaleUpBothMetricsEmpty: every metric unreadable: no change."""
        scaler = StageScaler(WIDE, feed_forward=True)
        assert scaler.decide(0, 3, None, None).desired == 3

    def test_multiple_metrics_take_the_highest(self) -> None:
        """TestScaleUpCM (several metrics): the highest proposal wins; here the cameras' demand."""
        scaler = StageScaler(WIDE, feed_forward=True)
        decision = scaler.decide(0, 2, 20, 6.2)
        assert (decision.desired, decision.reason) == (7, "demand")

    def test_recommendation_history_starts_with_the_current_count(self) -> None:
        """recordInitialRecommendation: the first evaluation (a restarted controller) puts the
        current count in the scale-down window, so it does not scale down at once."""
        scaler = StageScaler(dataclasses.replace(WIDE, scale_down_stabilization_s=300))
        held = scaler.decide(1000, 8, 10)
        assert (held.desired, held.reason) == (8, "stabilization window")
        assert scaler.decide(1301, 8, 10).desired == 1

    @pytest.mark.parametrize(
        ("current", "events", "policies", "select", "expected"),
        [
            pytest.param(5, [], (Policy("Pods", 4, 60),), "Max", 9, id="pods policy"),
            pytest.param(
                5,
                [ScaleEvent(-30, 2)],
                (Policy("Pods", 4, 60),),
                "Max",
                7,
                id="pods policy with a scale-up in the period",
            ),
            pytest.param(10, [], (Policy("Percent", 50, 60),), "Max", 15, id="percent policy"),
            pytest.param(
                5, [], (Policy("Pods", 4, 60), Policy("Pods", 2, 60)), "Min", 7, id="selectPolicy Min"
            ),
            pytest.param(5, [], (Policy("Pods", 4, 60),), "Disabled", 5, id="selectPolicy Disabled"),
            pytest.param(
                4,
                [ScaleEvent(-10, -2)],
                (Policy("Pods", 1, 60),),
                "Max",
                7,
                id="a scale-down in the period is put back",
            ),
        ],
    )
    def test_calculate_scale_up_limit_with_scaling_rules(
        self, current: int, events: list[ScaleEvent], policies: tuple[Policy, ...], select: Any, expected: int
    ) -> None:
        """TestCalculateScaleUpLimitWithScalingRules."""
        assert scale_up_limit(current, events, policies, 0, select) == expected

    @pytest.mark.parametrize(
        ("current", "events", "policies", "select", "expected"),
        [
            pytest.param(10, [], (Policy("Percent", 20, 60),), "Max", 8, id="percent policy"),
            pytest.param(
                10,
                [ScaleEvent(-30, -1)],
                (Policy("Percent", 20, 60),),
                "Max",
                8,
                id="percent policy with a scale-down in the period",
            ),
            pytest.param(
                100, [], (Policy("Percent", 10, 60), Policy("Pods", 5, 60)), "Max", 90, id="selectPolicy Max"
            ),
            pytest.param(
                100, [], (Policy("Percent", 10, 60), Policy("Pods", 5, 60)), "Min", 95, id="selectPolicy Min"
            ),
            pytest.param(10, [], (Policy("Pods", 3, 60),), "Max", 7, id="pods policy"),
            pytest.param(10, [], (Policy("Percent", 20, 60),), "Disabled", 10, id="selectPolicy Disabled"),
        ],
    )
    def test_calculate_scale_down_limit_with_behaviors(
        self, current: int, events: list[ScaleEvent], policies: tuple[Policy, ...], select: Any, expected: int
    ) -> None:
        """TestCalculateScaleDownLimitWithBehaviors."""
        assert scale_down_limit(current, events, policies, 0, select) == expected

    def test_scaling_with_rules_scale_down_disabled(self) -> None:
        """TestScalingWithRules (scale-down selectPolicy Disabled): the lag falls, nothing goes."""
        scaler = StageScaler(dataclasses.replace(WIDE, scale_down_select_policy="Disabled"))
        decision = scaler.decide(0, 6, 0)
        assert (decision.desired, decision.reason) == (6, "scale-down rate limit")

    def test_scaling_with_rules_pods_policy_on_scale_down(self) -> None:
        """TestScalingWithRules (Pods scale-down policy, selectPolicy Min): 10 → 8 with 2 pods a minute
        beside 100 %, then 8 is held inside the period."""
        scaler = StageScaler(
            dataclasses.replace(
                WIDE, scale_down_pods=2, scale_down_select_policy="Min", scale_down_period_s=60
            )
        )
        assert scaler.decide(0, 10, 0).desired == 8
        assert scaler.decide(30, 8, 0).desired == 8
        assert scaler.decide(61, 8, 0).desired == 6


class TestReplicaCalculator:
    """kubernetes/kubernetes pkg/controller/podautoscaler/replica_calculator_test.go."""

    def test_replica_calc_tolerance_per_pod_cm_external(self) -> None:
        """TestReplicaCalcTolerancePerPodCMExternal: 3 replicas, total 8600 against 2900 per pod
        (ratio 0.99): within tolerance, stays 3."""
        assert hpa_desired(3, 8600, 2900) == 3

    def test_replica_calc_scale_up_per_pod_cm_external(self) -> None:
        """TestReplicaCalcScaleUpPerPodCMExternal: AverageValue gives ceil(total / target)."""
        assert hpa_desired(3, 8600, 2150) == 4

    @pytest.mark.parametrize(
        ("ratio_total", "tolerances", "expected"),
        [
            pytest.param(105, Tolerances(scale_up=0.0), 11, id="outside a 0% scale-up tolerance"),
            pytest.param(105, Tolerances(scale_up=0.05), 10, id="within a 5% scale-up tolerance"),
            pytest.param(95, Tolerances(scale_down=0.05), 10, id="within a 5% scale-down tolerance"),
            pytest.param(
                94, Tolerances(scale_down=0.05), 10, id="outside a 5% scale-down tolerance rounds up to 10"
            ),
            pytest.param(85, Tolerances(scale_down=0.1), 9, id="outside the default scale-down tolerance"),
            pytest.param(300, Tolerances(scale_up=2.0), 10, id="within a 200% scale-up tolerance"),
        ],
    )
    def test_replica_calc_configurable_tolerance(
        self, ratio_total: int, tolerances: Tolerances, expected: int
    ) -> None:
        """Configurable tolerances (Kubernetes >= 1.33): 10 replicas at 10 per pod, separate
        scale-up and scale-down bands."""
        assert hpa_desired(10, ratio_total, 10, tolerances) == expected
