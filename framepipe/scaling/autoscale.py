"""KEDA + HPA scaling decisions, computed the way the cluster computes them.

A stage in the cluster is scaled by two controllers in series, and this module
reproduces both so that a setting tuned on a laptop (or in the simulator)
behaves the same when rendered into a ScaledObject:

* **KEDA** polls each trigger every ``pollingInterval``: the ``nats-jetstream``
  lag (``num_pending + num_ack_pending`` of the consumer, read by
  :mod:`framepipe.scaling.jsz`) and, with ``feed_forward``, the ``metrics-api``
  demand (the replicas the registered cameras need, :mod:`framepipe.scaling.demand`).
  KEDA alone moves a Deployment between 0 and ``max(1, minReplicaCount)``: it
  activates when a trigger is active and scales to zero once no trigger has
  been active for ``cooldownPeriod`` (never while a trigger errors). A trigger
  that failed more than ``fallback.failureThreshold`` polls in a row reports
  ``fallback.replicas × target`` instead, which the HPA turns into
  ``fallback.replicas`` through its usual rules (a metric, not a pinned count).
* **HPA** (``AverageValue`` targets): a count above max or below min is
  corrected first, whatever the metrics say. Otherwise each metric proposes
  ``ceil(total / target)`` unless its usage ratio ``total / (target × current)``
  is within the tolerances (``1 - down <= ratio <= 1 + up``); the highest
  proposal wins, but an unreadable metric blocks a scale-down and all of them
  unreadable block any change. Proposals are stabilised (scale-up takes the
  *lowest* of its window, scale-down the *highest*; the window starts with the
  current count, so a restarted controller does not scale down at once), then
  rate-limited by the behavior policies (``selectPolicy`` Max, Min or
  Disabled) and clamped to ``[max(1, min), max]``.

Everything here is pure (time is an argument), so unit tests replay upstream
test cases; :class:`Autoscaler` is the small poller the local supervisor runs.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import structlog

from framepipe.core.cluster_settings import ScalingSettings, StageScaling
from framepipe.core.errors import BusError
from framepipe.core.topology import SCALED_STAGES
from framepipe.scaling.behavior import (
    HPA_TOLERANCE,
    Behavior,
    Policy,
    ScaleEvent,
    SelectPolicy,
    Tolerances,
    hpa_desired,
    scale_down_limit,
    scale_up_limit,
)

# The HPA's stateless rules live in scaling/behavior.py; they stay importable from here.
__all__ = [
    "DEMAND",
    "HPA_TOLERANCE",
    "LAG",
    "Autoscaler",
    "Behavior",
    "Decision",
    "Policy",
    "ScaleEvent",
    "SelectPolicy",
    "StageScaler",
    "Tolerances",
    "cap_scaling",
    "hpa_desired",
    "scale_down_limit",
    "scale_up_limit",
]

log = structlog.get_logger("framepipe.autoscale")
LAG, DEMAND = "lag", "demand"


@dataclass(frozen=True)
class Decision:
    """One evaluation: what was seen, what each step recommended, and why."""

    at: float
    current: int
    desired: int
    lag: int | None
    active: bool
    recommendation: int | None = None
    reason: str = ""
    demand: float | None = None
    fallback: bool = False

    @property
    def changed(self) -> bool:
        return self.desired != self.current


@dataclass
class StageScaler:
    """KEDA + HPA state for one Deployment; :meth:`decide` is called every polling interval.

    With ``feed_forward`` the stage has the demand trigger besides the lag trigger,
    so :meth:`decide` expects a demand reading (``None`` means the read failed).
    """

    scaling: ScalingSettings
    tolerance: float | None = None
    feed_forward: bool = False
    behavior: Behavior = field(init=False)
    #: HPA stabilization history; seeded with the current count on the first evaluation.
    recommendations: list[tuple[float, int]] | None = None
    events: list[ScaleEvent] = field(default_factory=list)
    last_active: float | None = None
    #: consecutive failed reads per trigger (KEDA's ``status.health``).
    failures: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.behavior = Behavior.from_settings(self.scaling)
        if self.tolerance is not None:
            self.behavior = dataclasses.replace(
                self.behavior, tolerances=Tolerances(self.tolerance, self.tolerance)
            )

    @property
    def hpa_min(self) -> int:
        return max(1, self.scaling.min_replicas)

    def decide(self, now: float, current: int, lag: int | None, demand: float | None = None) -> Decision:
        """The replica count KEDA + HPA would set now; record it as applied."""
        readings: dict[str, float | None] = {LAG: lag}
        if self.feed_forward:
            readings[DEMAND] = demand
        decision = self._decide(now, current, readings)
        decision = dataclasses.replace(decision, lag=lag, demand=demand if self.feed_forward else None)
        horizon = self.behavior.horizon_s
        if self.recommendations is not None:
            self.recommendations = [(t, r) for t, r in self.recommendations if t > now - horizon]
        self.events = [e for e in self.events if e.at > now - horizon]
        return decision

    # -- KEDA -----------------------------------------------------------------
    def _trigger_values(
        self, readings: Mapping[str, float | None]
    ) -> tuple[dict[str, float], bool, bool, bool]:
        """Metric values fed to the HPA, and whether any trigger is active, failing, in fallback."""
        s = self.scaling
        values: dict[str, float] = {}
        active = error = fallback = False
        for name, value in readings.items():
            target = s.lag_threshold if name == LAG else 1.0
            if value is None:
                self.failures[name] = self.failures.get(name, 0) + 1
                if self.failures[name] > s.fallback_failure_threshold:
                    # KEDA answers the HPA with the metric that yields fallback.replicas.
                    values[name] = s.fallback_replicas * target
                    active = fallback = True
                else:
                    error = True
                continue
            self.failures[name] = 0
            values[name] = float(value)
            activation = s.activation_lag_threshold if name == LAG else 0.0
            active = active or value > activation
        return values, active, error, fallback

    def _decide(self, now: float, current: int, readings: Mapping[str, float | None]) -> Decision:
        s = self.scaling
        values, active, error, fallback = self._trigger_values(readings)
        why = "fallback" if fallback else ""
        if active:
            self.last_active = now
        if current == 0:
            # The HPA is idle at zero replicas; only KEDA's activation brings the stage back.
            if active:
                return Decision(
                    now, 0, self.hpa_min, None, True, reason=why or "activated", fallback=fallback
                )
            return Decision(now, 0, 0, None, False, reason="metric unavailable" if error else "idle")
        if s.min_replicas == 0 and not active and not error:
            # KEDA never scales to zero while a trigger errors (the fallback could not act).
            idle_since = self.last_active if self.last_active is not None else -math.inf
            if now - idle_since >= s.cooldown_period_s:
                self.recommendations = None
                return Decision(now, current, 0, None, False, reason="cooldown elapsed")
        return self._hpa(now, current, values, len(readings) - len(values), active, fallback, why)

    # -- HPA ------------------------------------------------------------------
    def _hpa(
        self,
        now: float,
        current: int,
        values: Mapping[str, float],
        invalid: int,
        active: bool,
        fallback: bool,
        why: str,
    ) -> Decision:
        s, b = self.scaling, self.behavior
        if self.recommendations is None:
            self.recommendations = [(now, current)]
        if current > s.max_replicas:
            return self._applied(
                Decision(now, current, s.max_replicas, None, active, reason="above max replicas")
            )
        if current < self.hpa_min:
            return self._applied(
                Decision(now, current, self.hpa_min, None, active, reason="below min replicas")
            )
        proposals = [
            hpa_desired(current, value, s.lag_threshold if name == LAG else 1.0, b.tolerances)
            for name, value in values.items()
        ]
        if not proposals or (invalid and max(proposals) < current):
            # All metrics unreadable, or one unreadable and the rest would scale down: hold.
            return Decision(
                now, current, current, None, active, reason="metric unavailable", fallback=fallback
            )
        raw = max(proposals)
        stabilized = self._stabilize(now, current, raw)
        desired, limited = self._rate_limit(now, current, stabilized)
        reason = limited or why
        if not reason:
            if desired == current and raw != current:
                reason = "stabilization window"
            elif raw == current:
                reason = "tolerance"
            else:
                reason = DEMAND if DEMAND in values and raw == proposals[-1] and raw > proposals[0] else LAG
        decision = Decision(
            now, current, desired, None, active, recommendation=raw, reason=reason, fallback=fallback
        )
        return self._applied(decision)

    def _applied(self, decision: Decision) -> Decision:
        if decision.changed:
            self.events.append(ScaleEvent(decision.at, decision.desired - decision.current))
        return decision

    def _stabilize(self, now: float, current: int, raw: int) -> int:
        b = self.behavior
        up, down = raw, raw
        history = self.recommendations or []
        for at, recommendation in history:
            if at > now - b.scale_up_window_s:
                up = min(up, recommendation)
            if at > now - b.scale_down_window_s:
                down = max(down, recommendation)
        history.append((now, raw))
        self.recommendations = history
        return min(max(current, up), down)

    def _rate_limit(self, now: float, current: int, desired: int) -> tuple[int, str]:
        s, b = self.scaling, self.behavior
        if desired > current:
            limit = scale_up_limit(current, self.events, b.scale_up, now, b.scale_up_select)
            ceiling = min(s.max_replicas, limit)
            if desired > ceiling:
                return ceiling, "max replicas" if ceiling == s.max_replicas else "scale-up rate limit"
        elif desired < current:
            limit = scale_down_limit(current, self.events, b.scale_down, now, b.scale_down_select)
            floor = max(self.hpa_min, limit)
            if desired < floor:
                return floor, "min replicas" if floor == self.hpa_min else "scale-down rate limit"
        return desired, ""


def cap_scaling(scaling: StageScaling, cap: int) -> StageScaling:
    """The same settings with every stage's max (and min, fallback) held to ``cap``."""
    capped = {}
    for stage in SCALED_STAGES:
        s: ScalingSettings = getattr(scaling, stage)
        top = max(1, min(s.max_replicas, cap))
        capped[stage] = dataclasses.replace(
            s,
            max_replicas=top,
            min_replicas=min(s.min_replicas, top),
            fallback_replicas=min(s.fallback_replicas, top),
        )
    return StageScaling(**capped)


# -- the poller -----------------------------------------------------------
#: stage → lag, or None where that stage's consumer could not be read.
LagReader = Callable[[], Mapping[str, int | None]]
#: stage → expected replicas from the registered cameras.
DemandReader = Callable[[], Mapping[str, float]]
Apply = Callable[[str, int], None]


class Autoscaler:
    """Polls the lag (and the demand) of each stage and applies KEDA + HPA decisions.

    The owner calls :meth:`step` from its own loop (the supervisor does so
    between health checks), so process changes never race with restarts.

    ``replicas`` gives the current count per stage (the supervisor's view);
    ``apply(stage, n)`` starts or drains processes. ``read_demand`` adds the
    feed-forward trigger to the ``demand_stages`` (those with a measured rate). Every change is one
    ``autoscale.scaled`` log line, and :attr:`timeline` keeps them for reports.
    A stage whose consumer is missing gets no lag; the others are unaffected.
    """

    def __init__(
        self,
        scaling: StageScaling,
        read_lags: LagReader,
        replicas: Callable[[str], int],
        apply: Apply,
        *,
        stages: tuple[str, ...] = SCALED_STAGES,
        clock: Callable[[], float] = time.monotonic,
        read_demand: DemandReader | None = None,
        demand_stages: tuple[str, ...] = SCALED_STAGES,
    ) -> None:
        self.scalers = {
            stage: StageScaler(
                getattr(scaling, stage),
                feed_forward=read_demand is not None
                and stage in demand_stages
                and getattr(scaling, stage).feed_forward,
            )
            for stage in stages
        }
        self.read_lags, self.replicas, self.apply, self.clock = read_lags, replicas, apply, clock
        self.read_demand = read_demand
        self.timeline: list[tuple[float, str, int, int | None, str]] = []
        self._next: dict[str, float] = {}
        #: the lag trigger's error as last logged: one line per outage, not one per poll.
        self._lag_error: str | None = None

    def _read(self) -> tuple[Mapping[str, int | None], Mapping[str, float] | None]:
        try:
            lags: Mapping[str, int | None] = self.read_lags()
        except BusError as exc:
            if self._lag_error != str(exc):
                log.warning("autoscale.metric_unavailable", trigger=LAG, error=str(exc))
            self._lag_error = str(exc)
            lags = {}
        else:
            if self._lag_error is not None:
                log.info("autoscale.metric_available", trigger=LAG)
                self._lag_error = None
        demand: Mapping[str, float] | None = None
        if self.read_demand is not None:
            try:
                demand = self.read_demand()
            except BusError as exc:
                log.warning("autoscale.metric_unavailable", trigger=DEMAND, error=str(exc))
        return lags, demand

    def step(self) -> list[Decision]:
        """Evaluate every stage whose polling interval has come round."""
        now = self.clock()
        due = [stage for stage in self.scalers if now >= self._next.get(stage, -math.inf)]
        if not due:
            return []
        lags, demand = self._read()
        decisions = []
        for stage in due:
            scaler = self.scalers[stage]
            self._next[stage] = now + scaler.scaling.polling_interval_s
            stage_demand = None if demand is None else demand.get(stage)
            decision = scaler.decide(now, self.replicas(stage), lags.get(stage), stage_demand)
            decisions.append(decision)
            if decision.changed:
                self.timeline.append((now, stage, decision.desired, decision.lag, decision.reason))
                log.info(
                    "autoscale.scaled",
                    stage=stage,
                    replicas_from=decision.current,
                    replicas_to=decision.desired,
                    lag=decision.lag,
                    demand=decision.demand,
                    recommendation=decision.recommendation,
                    reason=decision.reason,
                )
                self.apply(stage, decision.desired)
        return decisions
