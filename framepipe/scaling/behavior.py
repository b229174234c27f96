"""The HPA's rules without state: the tolerance band, ``spec.behavior`` and its rate limits.

Split from :mod:`framepipe.scaling.autoscale` (which applies them poll after poll):
``hpa_desired`` is the replica calculator for an ``AverageValue`` external metric,
:class:`Behavior` the ScaleUp/ScaleDown rules as rendered into the ScaledObject,
and :func:`scale_up_limit` / :func:`scale_down_limit` the HPA's
``calculateScaleUpLimitWithScalingRules`` / ``calculateScaleDownLimitWithBehaviors``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from framepipe.core.cluster_settings import ScalingSettings

#: ``--horizontal-pod-autoscaler-tolerance``'s default.
HPA_TOLERANCE = 0.1


@dataclass(frozen=True)
class Tolerances:
    """The band around a usage ratio of 1 inside which the HPA changes nothing."""

    scale_up: float = HPA_TOLERANCE
    scale_down: float = HPA_TOLERANCE

    def within(self, usage_ratio: float) -> bool:
        # Two comparisons, not abs(1 - ratio): the bounds are 1 ± tolerance as floats.
        return (1.0 - self.scale_down) <= usage_ratio <= (1.0 + self.scale_up)


def hpa_desired(
    current: int, metric_total: float, target_average: float, tolerance: float | Tolerances = HPA_TOLERANCE
) -> int:
    """The HPA's raw proposal for an ``AverageValue`` external metric (``current`` >= 1)."""
    if current < 1:
        raise ValueError("the HPA needs at least one current replica")
    band = tolerance if isinstance(tolerance, Tolerances) else Tolerances(tolerance, tolerance)
    if band.within(metric_total / (target_average * current)):
        return current
    return math.ceil(metric_total / target_average)


# -- behavior ---------------------------------------------------------------
SelectPolicy = Literal["Max", "Min", "Disabled"]


@dataclass(frozen=True)
class Policy:
    kind: Literal["Pods", "Percent"]
    value: int
    period_s: int


@dataclass(frozen=True)
class Behavior:
    """``spec.behavior`` of an HPA, as rendered into the ScaledObject."""

    scale_up_window_s: int = 0
    scale_up: tuple[Policy, ...] = (Policy("Percent", 100, 15), Policy("Pods", 4, 15))
    scale_down_window_s: int = 300
    scale_down: tuple[Policy, ...] = (Policy("Percent", 100, 15),)
    scale_up_select: SelectPolicy = "Max"
    scale_down_select: SelectPolicy = "Max"
    tolerances: Tolerances = Tolerances()

    @classmethod
    def from_settings(cls, scaling: ScalingSettings) -> Behavior:
        down = [Policy("Percent", scaling.scale_down_percent, scaling.scale_down_period_s)]
        if scaling.scale_down_pods:
            down.append(Policy("Pods", scaling.scale_down_pods, scaling.scale_down_period_s))
        return cls(
            scale_up_window_s=scaling.scale_up_stabilization_s,
            scale_up=(
                Policy("Percent", scaling.scale_up_percent, scaling.scale_up_period_s),
                Policy("Pods", scaling.scale_up_pods, scaling.scale_up_period_s),
            ),
            scale_down_window_s=scaling.scale_down_stabilization_s,
            scale_down=tuple(down),
            scale_up_select=_select(scaling.scale_up_select_policy),
            scale_down_select=_select(scaling.scale_down_select_policy),
            tolerances=Tolerances(scaling.scale_up_tolerance, scaling.scale_down_tolerance),
        )

    @property
    def horizon_s(self) -> int:
        """How long recommendations and scale events matter."""
        periods = [p.period_s for p in self.scale_up + self.scale_down]
        return max(self.scale_up_window_s, self.scale_down_window_s, *periods)


def _select(name: str) -> SelectPolicy:
    if name == "Min":
        return "Min"
    if name == "Disabled":
        return "Disabled"
    return "Max"


@dataclass(frozen=True)
class ScaleEvent:
    at: float
    change: int  # > 0 replicas added, < 0 removed


def _period_start(current: int, events: list[ScaleEvent], now: float, period_s: int) -> int:
    """Replicas at the start of a policy period: what was added in it is taken off again,
    what was removed is put back."""
    recent = [e.change for e in events if e.at > now - period_s]
    return current - sum(c for c in recent if c > 0) + sum(-c for c in recent if c < 0)


def _policy_limit(
    current: int,
    events: list[ScaleEvent],
    policies: tuple[Policy, ...],
    now: float,
    select: SelectPolicy,
    *,
    up: bool,
) -> int:
    """The count the policies of one direction allow now (never past ``current`` the wrong way)."""
    if select == "Disabled" or not policies:
        return current
    proposals = []
    for policy in policies:
        start = _period_start(current, events, now, policy.period_s)
        if policy.kind == "Pods":
            proposals.append(start + policy.value if up else start - policy.value)
        elif up:
            proposals.append(math.ceil(start * (1 + policy.value / 100)))
        else:
            # A percentage scale-down keeps the truncated count (a scale-up rounds up).
            proposals.append(int(start * (1 - policy.value / 100)))
    # Max picks the policy that allows the biggest change (most replicas up, fewest down),
    # Min the smallest.
    biggest, smallest = (max, min) if up else (min, max)
    limit = biggest(proposals) if select == "Max" else smallest(proposals)
    return max(limit, current) if up else min(limit, current)


def scale_up_limit(
    current: int,
    events: list[ScaleEvent],
    policies: tuple[Policy, ...],
    now: float,
    select: SelectPolicy = "Max",
) -> int:
    """Most replicas the scale-up policies allow now (never fewer than ``current``)."""
    return _policy_limit(current, events, policies, now, select, up=True)


def scale_down_limit(
    current: int,
    events: list[ScaleEvent],
    policies: tuple[Policy, ...],
    now: float,
    select: SelectPolicy = "Max",
) -> int:
    """Fewest replicas the scale-down policies allow now (never more than ``current``)."""
    return _policy_limit(current, events, policies, now, select, up=False)
