"""KEDA + HPA scaling decisions, computed the way the cluster computes them.

A stage in the cluster is scaled by two controllers in series, and this module
reproduces both so that a setting tuned on a laptop (or in the simulator)
behaves the same when rendered into a ScaledObject:

* **KEDA** polls the ``nats-jetstream`` trigger every ``pollingInterval``. The
  metric is the consumer's lag, ``num_pending + num_ack_pending`` from the
  monitoring endpoint ``/jsz?acc=…&consumers=true&config=true``. KEDA alone
  moves a Deployment between 0 and ``max(1, minReplicaCount)``: it activates
  when the lag exceeds ``activationLagThreshold`` and deactivates once the
  trigger has been inactive for ``cooldownPeriod``. Above zero it hands over to
  the HPA; after ``fallback.failureThreshold`` failed polls it pins the
  Deployment to ``fallback.replicas``.
* **HPA** (``AverageValue`` target ``lagThreshold``): the usage ratio is
  ``lag / (threshold × current)``; inside the 10 % tolerance band nothing
  changes, otherwise ``desired = ceil(lag / threshold)``. Recommendations are
  stabilised (scale-up takes the *lowest* recommendation of its window,
  scale-down the *highest* of its window), then rate-limited by the behavior
  policies (``selectPolicy: Max``) over their periods, then clamped to
  ``[max(1, min), max]``.

Everything here is pure (time is an argument), so unit tests can replay the
worked examples of the Kubernetes documentation; :class:`Autoscaler` is the
small poller the local supervisor runs.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import structlog

from framepipe.core.cluster_settings import ScalingSettings, StageScaling
from framepipe.core.errors import BusError
from framepipe.core.topology import SCALED_STAGES, stage_spec

log = structlog.get_logger("framepipe.autoscale")

#: ``--horizontal-pod-autoscaler-tolerance``'s default.
HPA_TOLERANCE = 0.1


# -- the metric -----------------------------------------------------------
@dataclass(frozen=True)
class ConsumerLag:
    stream: str
    consumer: str
    num_pending: int
    num_ack_pending: int

    @property
    def lag(self) -> int:
        """What KEDA's nats-jetstream scaler reports: not yet delivered + delivered, unacked."""
        return self.num_pending + self.num_ack_pending


def jsz_url(monitor_url: str, account: str | None = None) -> str:
    query = {"consumers": "true", "config": "true"}
    if account:
        query["acc"] = account
    else:
        query["accounts"] = "true"
    return f"{monitor_url.rstrip('/')}/jsz?{urllib.parse.urlencode(query)}"


def parse_jsz(payload: Mapping[str, Any], stream: str, consumer: str) -> ConsumerLag | None:
    """Find one consumer's lag in a ``/jsz`` answer (any account); ``None`` if absent."""
    for account in payload.get("account_details") or []:
        for stream_detail in account.get("stream_detail") or []:
            if stream_detail.get("name") != stream:
                continue
            for detail in stream_detail.get("consumer_detail") or []:
                if detail.get("name") == consumer:
                    return ConsumerLag(
                        stream,
                        consumer,
                        int(detail.get("num_pending") or 0),
                        int(detail.get("num_ack_pending") or 0),
                    )
    return None


def fetch_lags(
    monitor_url: str,
    stages: tuple[str, ...] = SCALED_STAGES,
    *,
    account: str | None = None,
    timeout: float = 5.0,
) -> dict[str, ConsumerLag]:
    """Lag of each stage's durable consumer, from one ``/jsz`` request."""
    url = jsz_url(monitor_url, account)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            payload = json.loads(response.read())
    except (OSError, ValueError) as exc:
        raise BusError(f"cannot read consumer lag from {url}: {exc}") from None
    lags: dict[str, ConsumerLag] = {}
    for stage in stages:
        spec = stage_spec(stage).consumer
        found = parse_jsz(payload, spec.stream, spec.durable)
        if found is None:
            raise BusError(f"consumer {spec.stream}/{spec.durable} is not in {url}; run `framepipe setup`")
        lags[stage] = found
    return lags


# -- HPA --------------------------------------------------------------------
def hpa_desired(
    current: int, metric_total: float, target_average: float, tolerance: float = HPA_TOLERANCE
) -> int:
    """The HPA's raw recommendation for an ``AverageValue`` external metric.

    ``current`` must be at least 1 (an HPA never runs a Deployment at zero).
    """
    if current < 1:
        raise ValueError("the HPA needs at least one current replica")
    usage_ratio = metric_total / (target_average * current)
    if abs(1.0 - usage_ratio) <= tolerance:
        return current
    return math.ceil(metric_total / target_average)


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

    @classmethod
    def from_settings(cls, scaling: ScalingSettings) -> Behavior:
        return cls(
            scale_up_window_s=scaling.scale_up_stabilization_s,
            scale_up=(
                Policy("Percent", scaling.scale_up_percent, scaling.scale_up_period_s),
                Policy("Pods", scaling.scale_up_pods, scaling.scale_up_period_s),
            ),
            scale_down_window_s=scaling.scale_down_stabilization_s,
            scale_down=(Policy("Percent", scaling.scale_down_percent, scaling.scale_down_period_s),),
        )


@dataclass(frozen=True)
class ScaleEvent:
    at: float
    change: int  # > 0 replicas added, < 0 removed


def _changed_within(events: list[ScaleEvent], now: float, period_s: int, sign: int) -> int:
    return sum(abs(e.change) for e in events if e.at > now - period_s and e.change * sign > 0)


def scale_up_limit(current: int, events: list[ScaleEvent], policies: tuple[Policy, ...], now: float) -> int:
    """Most replicas the scale-up policies allow now (``selectPolicy: Max``)."""
    best = -1
    for policy in policies:
        added = _changed_within(events, now, policy.period_s, +1)
        removed = _changed_within(events, now, policy.period_s, -1)
        start = current - added + removed
        if policy.kind == "Pods":
            proposed = start + policy.value
        else:
            proposed = math.ceil(start * (1 + policy.value / 100))
        best = max(best, proposed)
    return best


def scale_down_limit(current: int, events: list[ScaleEvent], policies: tuple[Policy, ...], now: float) -> int:
    """Fewest replicas the scale-down policies allow now (``selectPolicy: Max``)."""
    best = current
    for policy in policies:
        added = _changed_within(events, now, policy.period_s, +1)
        removed = _changed_within(events, now, policy.period_s, -1)
        start = current - added + removed
        # The HPA truncates a percentage scale-down (and rounds a scale-up up).
        proposed = start - policy.value if policy.kind == "Pods" else int(start * (1 - policy.value / 100))
        best = min(best, proposed)
    return best


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

    @property
    def changed(self) -> bool:
        return self.desired != self.current


@dataclass
class StageScaler:
    """KEDA + HPA state for one Deployment; :meth:`decide` is called every polling interval."""

    scaling: ScalingSettings
    tolerance: float = HPA_TOLERANCE
    behavior: Behavior = field(init=False)
    recommendations: list[tuple[float, int]] = field(default_factory=list)
    events: list[ScaleEvent] = field(default_factory=list)
    last_active: float | None = None
    failures: int = 0

    def __post_init__(self) -> None:
        self.behavior = Behavior.from_settings(self.scaling)

    @property
    def hpa_min(self) -> int:
        return max(1, self.scaling.min_replicas)

    def decide(self, now: float, current: int, lag: int | None) -> Decision:
        """The replica count KEDA + HPA would set now; record it as applied."""
        decision = self._decide(now, current, lag)
        if decision.changed:
            self.events.append(ScaleEvent(now, decision.desired - current))
        horizon = max(
            self.behavior.scale_up_window_s,
            self.behavior.scale_down_window_s,
            *(p.period_s for p in self.behavior.scale_up + self.behavior.scale_down),
        )
        self.recommendations = [(t, r) for t, r in self.recommendations if t > now - horizon]
        self.events = [e for e in self.events if e.at > now - horizon]
        return decision

    def _decide(self, now: float, current: int, lag: int | None) -> Decision:
        s = self.scaling
        if lag is None:
            self.failures += 1
            if self.failures >= s.fallback_failure_threshold:
                return Decision(now, current, s.fallback_replicas, None, False, reason="fallback")
            return Decision(now, current, current, None, False, reason="metric unavailable")
        self.failures = 0
        active = lag > s.activation_lag_threshold
        if active:
            self.last_active = now
        if current == 0:
            if active:
                return Decision(now, 0, self.hpa_min, lag, True, reason="activated")
            return Decision(now, 0, 0, lag, False, reason="idle")
        if s.min_replicas == 0 and not active:
            idle_since = self.last_active if self.last_active is not None else -math.inf
            if now - idle_since >= s.cooldown_period_s:
                self.recommendations.clear()
                return Decision(now, current, 0, lag, False, reason="cooldown elapsed")
        raw = hpa_desired(current, lag, s.lag_threshold, self.tolerance)
        stabilized = self._stabilize(now, current, raw)
        desired, reason = self._rate_limit(now, current, stabilized)
        if desired == current and raw != current and not reason:
            reason = "stabilization window"
        if not reason:
            reason = "tolerance" if raw == current else "lag"
        return Decision(now, current, desired, lag, active, recommendation=raw, reason=reason)

    def _stabilize(self, now: float, current: int, raw: int) -> int:
        b = self.behavior
        up, down = raw, raw
        for at, recommendation in self.recommendations:
            if at > now - b.scale_up_window_s:
                up = min(up, recommendation)
            if at > now - b.scale_down_window_s:
                down = max(down, recommendation)
        self.recommendations.append((now, raw))
        return min(max(current, up), down)

    def _rate_limit(self, now: float, current: int, desired: int) -> tuple[int, str]:
        s, b = self.scaling, self.behavior
        if desired > current:
            limit = max(current, scale_up_limit(current, self.events, b.scale_up, now))
            ceiling = min(s.max_replicas, limit)
            if desired > ceiling:
                return ceiling, "max replicas" if ceiling == s.max_replicas else "scale-up rate limit"
        elif desired < current:
            limit = min(current, scale_down_limit(current, self.events, b.scale_down, now))
            floor = max(self.hpa_min, limit)
            if desired < floor:
                return floor, "min replicas" if floor == self.hpa_min else "scale-down rate limit"
        return max(self.hpa_min, min(s.max_replicas, desired)), ""


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
LagReader = Callable[[], Mapping[str, int]]
Apply = Callable[[str, int], None]


class Autoscaler:
    """Polls the lag of each stage and applies KEDA + HPA decisions through ``apply``.

    The owner calls :meth:`step` from its own loop (the supervisor does so
    between health checks), so process changes never race with restarts.

    ``replicas`` gives the current count per stage (the supervisor's view);
    ``apply(stage, n)`` starts or drains processes. Every change is one
    ``autoscale.scaled`` log line, and :attr:`timeline` keeps them for reports.
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
    ) -> None:
        self.scalers = {stage: StageScaler(getattr(scaling, stage)) for stage in stages}
        self.read_lags, self.replicas, self.apply, self.clock = read_lags, replicas, apply, clock
        self.timeline: list[tuple[float, str, int, int | None, str]] = []
        self._next: dict[str, float] = {}

    def step(self) -> list[Decision]:
        """Evaluate every stage whose polling interval has come round."""
        now = self.clock()
        due = [stage for stage in self.scalers if now >= self._next.get(stage, -math.inf)]
        if not due:
            return []
        try:
            lags: Mapping[str, int] | None = self.read_lags()
        except BusError as exc:
            log.warning("autoscale.metric_unavailable", error=str(exc))
            lags = None
        decisions = []
        for stage in due:
            scaler = self.scalers[stage]
            self._next[stage] = now + scaler.scaling.polling_interval_s
            lag = None if lags is None else lags.get(stage)
            decision = scaler.decide(now, self.replicas(stage), lag)
            decisions.append(decision)
            if decision.changed:
                self.timeline.append((now, stage, decision.desired, decision.lag, decision.reason))
                log.info(
                    "autoscale.scaled",
                    stage=stage,
                    replicas_from=decision.current,
                    replicas_to=decision.desired,
                    lag=decision.lag,
                    recommendation=decision.recommendation,
                    reason=decision.reason,
                )
                self.apply(stage, decision.desired)
        return decisions
