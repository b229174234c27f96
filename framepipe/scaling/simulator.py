"""Replay a load curve against the stages' scaling settings, without a cluster.

The pipeline is modelled as three queues in series (decoder → inference →
encoder), each drained by its ready replicas at a measured per-replica
throughput. Every ``polling_interval_s`` each stage's :class:`StageScaler`
(the same KEDA + HPA code the local supervisor runs) sees the stage's lag and
sets the Deployment's replica count; new replicas serve only after a start-up
delay (image already on the node, model load), drained ones stop at once. The
lag includes the messages busy replicas hold unacked (``num_ack_pending``),
which is what lets lag-based scaling settle instead of draining the queue and
collapsing to the minimum.

Work is a fluid in messages: a camera at ``fps`` with ``gop_frames`` GOPs sends
``fps / gop_frames`` GOP messages per second to the decoder, which sends
``ceil(gop_frames / frames_per_part)`` frame messages per GOP to inference and
one encode item per GOP to the encoder. Queues are FIFO, so the age of the
oldest message still waiting at a stage (its *backlog age*) and each GOP's
time from gateway to encoded segment are exact for the fluid.

On one machine (the local system) the replicas of *every* stage share its
cores: with ``cores`` set, replicas that have work when more of them are busy
than there are cores available each serve at ``cores / busy`` of their speed
(processor sharing), whatever their stage. Adding a replica then shortens no
queue once the machine is full, which a per-stage efficiency cannot express.
In a cluster each pod has its own CPU request, so ``cores`` stays unset there.

The same run with every stage fixed at the replicas its peak load needs gives
the baseline: *static peak provisioning*.
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from framepipe.core.cluster_settings import ScalingSettings, StageScaling
from framepipe.core.topology import SCALED_STAGES
from framepipe.scaling.autoscale import StageScaler
from framepipe.scaling.curves import LoadCurve
from framepipe.scaling.demand import CameraLoad, expected_replicas

EPSILON = 1e-9


# -- the load -------------------------------------------------------------
@dataclass(frozen=True)
class StageModel:
    """What the simulator needs to know about one stage."""

    gops_per_s: float  # one ready replica's throughput
    messages_per_gop: int = 1
    startup_s: float = 20.0
    #: messages a busy replica holds delivered but unacked (KEDA counts them as lag).
    held_per_replica: float = 1.0
    #: throughput of each replica beyond the first, as a share of the first's (1: linear;
    #: below 1 where replicas share cores, as on one machine). Calibrated against real runs.
    efficiency: float = 1.0

    def capacity(self, ready: int) -> float:
        """Messages/s that ``ready`` replicas serve together."""
        return self.messages_per_s * (min(ready, 1) + max(ready - 1, 0) * self.efficiency)

    @property
    def messages_per_s(self) -> float:
        return self.gops_per_s * self.messages_per_gop


@dataclass
class _Queue:
    chunks: deque[list[float]] = field(default_factory=deque)  # [origin_t, enqueued_t, messages]
    size: float = 0.0

    def push(self, origin: float, now: float, amount: float) -> None:
        if amount > EPSILON:
            self.chunks.append([origin, now, amount])
            self.size += amount

    def take(self, amount: float) -> list[tuple[float, float]]:
        """Serve up to ``amount`` messages FIFO; returns (origin_t, messages) served."""
        served: list[tuple[float, float]] = []
        while amount > EPSILON and self.chunks:
            head = self.chunks[0]
            part = min(amount, head[2])
            served.append((head[0], part))
            head[2] -= part
            amount -= part
            self.size -= part
            if head[2] <= EPSILON:
                self.chunks.popleft()
        if not self.chunks:
            self.size = 0.0
        return served

    def age(self, now: float) -> float:
        return now - self.chunks[0][1] if self.chunks else 0.0


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100); 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def weighted_percentile(samples: list[tuple[float, float]], q: float) -> float:
    """Percentile of values weighted by amount (value, weight)."""
    total = sum(w for _, w in samples)
    if total <= 0:
        return 0.0
    target, seen = q / 100 * total, 0.0
    for value, weight in sorted(samples):
        seen += weight
        if seen >= target - EPSILON:
            return value
    return max(v for v, _ in samples)


@dataclass
class SimResult:
    label: str
    times: list[float]
    cameras: list[float]
    replicas: dict[str, list[int]]
    ready: dict[str, list[int]]
    lag: dict[str, list[float]]
    age: dict[str, list[float]]
    latency: list[tuple[float, float]]  # (gateway → encoded seconds, GOPs)
    step_s: float

    def replica_seconds(self, stage: str | None = None) -> float:
        stages = [stage] if stage else list(self.replicas)
        return sum(sum(self.replicas[s]) * self.step_s for s in stages)

    def summary(self) -> dict[str, Any]:
        oldest = [max(self.age[s][i] for s in self.age) for i in range(len(self.times))]
        return {
            "label": self.label,
            "backlog_age_s": {
                "p50": round(percentile(oldest, 50), 2),
                "p95": round(percentile(oldest, 95), 2),
                "max": round(max(oldest, default=0.0), 2),
            },
            "latency_s": {
                "p50": round(weighted_percentile(self.latency, 50), 2),
                "p95": round(weighted_percentile(self.latency, 95), 2),
                "max": round(max((v for v, _ in self.latency), default=0.0), 2),
            },
            "replica_seconds": round(self.replica_seconds(), 1),
            "stages": {
                s: {
                    "backlog_age_p95_s": round(percentile(self.age[s], 95), 2),
                    "backlog_age_max_s": round(max(self.age[s], default=0.0), 2),
                    "replicas_max": max(self.replicas[s], default=0),
                    "replicas_min": min(self.replicas[s], default=0),
                    "replica_seconds": round(self.replica_seconds(s), 1),
                }
                for s in self.replicas
            },
        }


def simulate(
    curve: LoadCurve,
    scaling: StageScaling,
    models: dict[str, StageModel],
    *,
    static: dict[str, int] | None = None,
    step_s: float = 1.0,
    label: str = "autoscaled",
    feed_forward: bool = True,
    cores: float = 0.0,
) -> SimResult:
    """Run the curve; ``static`` fixes each stage's replicas instead of autoscaling.

    With ``feed_forward`` each stage whose settings enable it also gets the demand
    trigger: the replicas the curve's current cameras need at the model's rate
    (:func:`framepipe.scaling.demand.expected_replicas`, the rule the cluster serves).
    ``cores`` > 0 makes all stages' replicas share that many cores (see the module).
    """
    stages = SCALED_STAGES
    scalers = {
        s: StageScaler(getattr(scaling, s), feed_forward=feed_forward and getattr(scaling, s).feed_forward)
        for s in stages
    }
    rates = {s: models[s].gops_per_s for s in stages}
    queues = {s: _Queue() for s in stages}
    desired = {s: (static or {}).get(s, max(getattr(scaling, s).min_replicas, 0)) for s in stages}
    starting: dict[str, list[float]] = {s: [] for s in stages}  # ready-at times of new pods
    ready = dict(desired)
    busy = dict.fromkeys(stages, 0.0)  # replicas working, from last step's throughput
    working = dict.fromkeys(stages, 0.0)  # replicas that had work last step, at full speed
    next_poll = dict.fromkeys(stages, 0.0)
    result = SimResult(
        label,
        [],
        [],
        {s: [] for s in stages},
        {s: [] for s in stages},
        {s: [] for s in stages},
        {s: [] for s in stages},
        [],
        step_s,
    )
    t = 0.0
    while t < curve.duration_s:
        cameras = curve.cameras(t)
        queues[stages[0]].push(
            t, t, cameras * curve.gops_per_camera_s * step_s * models[stages[0]].messages_per_gop
        )
        share = _core_share(cores, working)
        for index, stage in enumerate(stages):
            model = models[stage]
            if static is None and t >= next_poll[stage]:
                next_poll[stage] = t + scalers[stage].scaling.polling_interval_s
                # num_pending + num_ack_pending: waiting, plus what busy replicas hold.
                lag = math.ceil(queues[stage].size + busy[stage] * model.held_per_replica - EPSILON)
                demand = expected_replicas(
                    [CameraLoad("curve", cameras * curve.gops_per_camera_s)], rates, scaling
                ).get(stage)
                decision = scalers[stage].decide(t, desired[stage], lag, demand)
                change = decision.desired - desired[stage]
                if change > 0:
                    starting[stage] += [t + model.startup_s] * change
                elif change < 0:
                    # Pods still starting go first (as a ReplicaSet deletes unready pods first).
                    drop = -change
                    while drop and starting[stage]:
                        starting[stage].pop()
                        drop -= 1
                    ready[stage] -= drop
                desired[stage] = decision.desired
            if starting[stage] and min(starting[stage]) <= t:
                ready[stage] += sum(1 for at in starting[stage] if at <= t)
                starting[stage] = [at for at in starting[stage] if at > t]
            working[stage] = min(float(ready[stage]), queues[stage].size / (model.messages_per_s * step_s))
            served = queues[stage].take(model.capacity(ready[stage]) * share * step_s)
            # Replicas holding a message: a slowed one holds it longer, so divide the share out.
            busy[stage] = sum(m for _, m in served) / (model.messages_per_s * share * step_s)
            gops = [(origin, messages / model.messages_per_gop) for origin, messages in served]
            if index + 1 < len(stages):
                following = stages[index + 1]
                for origin, count in gops:
                    queues[following].push(origin, t, count * models[following].messages_per_gop)
            else:
                result.latency += [(t + step_s - origin, count) for origin, count in gops]
        result.times.append(t)
        result.cameras.append(cameras)
        for stage in stages:
            result.replicas[stage].append(desired[stage])
            result.ready[stage].append(ready[stage])
            result.lag[stage].append(round(queues[stage].size, 3))
            result.age[stage].append(queues[stage].age(t + step_s))
        t += step_s
    return result


def _core_share(cores: float, working: dict[str, float]) -> float:
    """The speed each working replica gets when ``cores`` are shared by all stages (1: no limit).

    ``working`` is how many replicas of each stage had work in the last step (the work offered
    in full-speed replica units, at most its ready replicas): the fluid flows through every
    stage within one step, so the step's own queues at its start would miss the downstream work."""
    total = sum(working.values())
    if cores <= 0 or total <= EPSILON:
        return 1.0
    return min(1.0, cores / total)


def static_peak(curve: LoadCurve, models: dict[str, StageModel]) -> dict[str, int]:
    """Replicas each stage needs to keep up with the curve's peak."""
    peak_gops = curve.peak * curve.gops_per_camera_s
    return {s: max(1, math.ceil(peak_gops / models[s].gops_per_s - EPSILON)) for s in SCALED_STAGES}


def compare(
    curve: LoadCurve,
    scaling: StageScaling,
    models: dict[str, StageModel],
    step_s: float = 1.0,
    feed_forward: bool = True,
    cores: float = 0.0,
) -> tuple[SimResult, SimResult]:
    """The autoscaled run and the static-peak run of the same curve (on the same ``cores``)."""
    auto = simulate(curve, scaling, models, step_s=step_s, feed_forward=feed_forward, cores=cores)
    fixed = simulate(
        curve,
        scaling,
        models,
        static=static_peak(curve, models),
        step_s=step_s,
        label="static peak",
        cores=cores,
    )
    return auto, fixed


def with_stage(scaling: StageScaling, stage: str, **changes: Any) -> StageScaling:
    current: ScalingSettings = getattr(scaling, stage)
    return scaling.replace(**{stage: dataclasses.replace(current, **changes)})
