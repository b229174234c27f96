"""Recommend per-stage scaling settings from measured throughput and a target backlog age.

Each candidate comes from queueing arithmetic: at steady state each replica
carries ``lag_threshold`` messages of lag, of which it holds about
``held_per_replica`` itself, so the oldest waiting message is about
``(lag_threshold - held) / per-replica rate`` old; half the target is left for
what the arithmetic ignores (polling, pod start-up, bursts); candidates differ in that
share and in how fast they scale up and down. Replica bounds come from the
curve's trough and peak. Every candidate is run on the curve with the simulator
and the cheapest one that keeps the p95 backlog age within the target wins;
if none does, the closest is tightened stage by stage.

Each stage's measured rate is written as ``gops_per_replica`` (the simulated
candidates ran with feed-forward at that rate, so the cluster's demand trigger
matches them). Tolerances, select policies, ``scale_down_pods`` and the
feed-forward utilization are written as simulated but not searched:
:data:`NOT_SEARCHED` says why.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomlkit

from framepipe.core.cluster_settings import ScalingSettings, StageScaling
from framepipe.core.errors import ConfigError
from framepipe.core.topology import SCALED_STAGES
from framepipe.scaling.curves import LoadCurve
from framepipe.scaling.simulator import SimResult, StageModel, percentile, simulate, with_stage

#: the fields ``framepipe scale tune`` owns in ``[scaling.<stage>]``.
TUNED_FIELDS = (
    "min_replicas",
    "max_replicas",
    "lag_threshold",
    "activation_lag_threshold",
    "polling_interval_s",
    "scale_up_stabilization_s",
    "scale_up_pods",
    "scale_up_percent",
    "scale_up_period_s",
    "scale_down_stabilization_s",
    "scale_down_percent",
    "scale_down_period_s",
    "fallback_replicas",
    # each stage's measured rate: it turns the cluster's feed-forward demand trigger on with
    # the figure the candidates were simulated with.
    "gops_per_replica",
)
#: written as the candidates were simulated with them, not searched (see NOT_SEARCHED).
WRITTEN_AS_SIMULATED = (
    "feed_forward",
    "feed_forward_utilization",
    "scale_up_tolerance",
    "scale_down_tolerance",
    "scale_up_select_policy",
    "scale_down_select_policy",
    "scale_down_pods",
)
#: why the tuner keeps those at their defaults: the fluid simulator has no noise to trade them against.
NOT_SEARCHED = (
    "not searched, written as simulated: tolerances (the band absorbs metric noise, which the "
    "fluid simulator has none of, so any search would pick 0), feed_forward_utilization (the "
    "headroom for service-time spread the simulator does not model; a search would pick 1.0), "
    "select policies and scale_down_pods (the candidates vary the Pods/Percent steps with "
    "selectPolicy Max instead)"
)


@dataclass
class Tuning:
    scaling: StageScaling
    result: SimResult
    target_age_s: float
    steps: list[str] = field(default_factory=list)
    p95_age_s: float = field(init=False)

    def __post_init__(self) -> None:
        # summary() sorts a day of samples: compute the figure the search compares once.
        self.p95_age_s = float(self.result.summary()["backlog_age_s"]["p95"])

    @property
    def met(self) -> bool:
        return self.p95_age_s <= self.target_age_s


@dataclass(frozen=True)
class Candidate:
    """One point of the search: how much of the target the threshold spends, how fast
    replicas are added (gentle: 2 pods or 10 % per 30 s; fast: half the max per 15 s)
    and how much of a stage one scale-down step may remove per minute."""

    threshold_share: float
    fast_scale_up: bool
    scale_down_percent: int

    def describe(self) -> str:
        up = "fast" if self.fast_scale_up else "gentle"
        share = f"{self.threshold_share:.2f}"
        return f"threshold {share}×target, {up} scale-up, scale-down {self.scale_down_percent}%/min"


CANDIDATES = tuple(
    Candidate(share, fast, down) for share in (0.25, 0.5, 1.0) for fast in (False, True) for down in (10, 50)
)


def settings_for(
    curve: LoadCurve,
    models: dict[str, StageModel],
    target_age_s: float,
    candidate: Candidate = Candidate(0.5, False, 10),
    *,
    allow_zero: bool = False,
) -> StageScaling:
    """Scaling settings from queueing arithmetic for one candidate (no simulation)."""
    if target_age_s <= 0:
        raise ConfigError(f"target backlog age must be > 0 s, got {target_age_s}")
    trough_gops = min(c for _, c in curve.points) * curve.gops_per_camera_s
    peak_gops = curve.peak * curve.gops_per_camera_s
    polling = int(min(30, max(1, round(target_age_s / 2))))
    stages: dict[str, ScalingSettings] = {}
    for stage in SCALED_STAGES:
        model = models[stage]
        need_peak = max(1, math.ceil(peak_gops / model.gops_per_s))
        maximum = need_peak + max(1, math.ceil(need_peak / 4))
        minimum = 0 if allow_zero else max(1, math.ceil(trough_gops / model.gops_per_s))
        # Steady state: lag/replica = held + waiting/replica, and waiting/replica/rate is the age.
        waiting = model.messages_per_s * target_age_s * candidate.threshold_share
        stages[stage] = ScalingSettings(
            min_replicas=min(minimum, maximum),
            max_replicas=maximum,
            lag_threshold=max(1, math.floor(model.held_per_replica + waiting)),
            activation_lag_threshold=0,
            polling_interval_s=polling,
            scale_up_stabilization_s=0,
            scale_up_pods=max(1, math.ceil(maximum / 2)) if candidate.fast_scale_up else 2,
            scale_up_percent=100 if candidate.fast_scale_up else 10,
            scale_up_period_s=max(polling, 15 if candidate.fast_scale_up else 30),
            # The HPA's default window: long enough to ride out one drained queue.
            scale_down_stabilization_s=300,
            scale_down_percent=candidate.scale_down_percent,
            scale_down_period_s=60,
            fallback_replicas=max(1, min(maximum, need_peak)),
            gops_per_replica=round(model.gops_per_s, 3),
        )
    return StageScaling(**stages)


def _changes(result: SimResult) -> int:
    return sum(sum(1 for a, b in itertools.pairwise(r) if a != b) for r in result.replicas.values())


def tune(
    curve: LoadCurve,
    models: dict[str, StageModel],
    target_age_s: float,
    *,
    allow_zero: bool = False,
    max_rounds: int = 8,
    step_s: float = 1.0,
    candidates: tuple[Candidate, ...] = CANDIDATES,
    on_step: Callable[[str, int, int], None] | None = None,
) -> Tuning:
    """Simulate every candidate; keep the cheapest (replica-seconds, then fewest replica
    changes) whose p95 backlog age meets the target. If none does, tighten the best one:
    the slowest stage's threshold, then its scale-up step, then its minimum.

    ``on_step(line, simulations done, simulations planned)`` follows a long run (a day's
    curve takes a minute or more): called after each simulation with its line of ``steps``."""
    tried: list[Tuning] = []
    steps: list[str] = []
    planned = len(candidates)

    def said(line: str) -> None:
        steps.append(line)
        if on_step is not None:
            on_step(line, len(tried), planned)

    for candidate in candidates:
        scaling = settings_for(curve, models, target_age_s, candidate, allow_zero=allow_zero)
        tuning = Tuning(scaling, simulate(curve, scaling, models, step_s=step_s), target_age_s, steps)
        tried.append(tuning)
        said(
            f"{candidate.describe()}: p95 backlog age {tuning.p95_age_s:.1f} s, "
            f"{tuning.result.replica_seconds():.0f} replica-s, {_changes(tuning.result)} replica changes"
        )
    meeting = [t for t in tried if t.met]
    if meeting:
        best = min(meeting, key=lambda t: (t.result.replica_seconds(), _changes(t.result)))
        steps.append(f"chosen: {candidates[tried.index(best)].describe()}")
        return best
    tuning = min(tried, key=lambda t: t.p95_age_s)
    scaling = tuning.scaling
    planned += max_rounds  # at most: the loop below stops once the target is met
    steps.append(
        f"no candidate meets {target_age_s} s; tightening {candidates[tried.index(tuning)].describe()}"
    )
    for _ in range(max_rounds):
        if tuning.met:
            break
        worst = max(SCALED_STAGES, key=lambda s: percentile(tuning.result.age[s], 95))
        current: ScalingSettings = getattr(scaling, worst)
        if current.lag_threshold > 1:
            changes: dict[str, Any] = {"lag_threshold": max(1, math.floor(current.lag_threshold * 0.6))}
        elif current.scale_up_pods < current.max_replicas:
            changes = {"scale_up_pods": current.max_replicas, "scale_up_percent": 100}
        elif current.min_replicas < current.max_replicas:
            changes = {"min_replicas": current.min_replicas + 1}
        else:
            steps.append(f"{worst}: at its limits; raise max_replicas or per-replica capacity")
            break
        scaling = with_stage(scaling, worst, **changes)
        tuning = Tuning(scaling, simulate(curve, scaling, models, step_s=step_s), target_age_s, steps)
        tried.append(tuning)
        described = ", ".join(f"{k}={v}" for k, v in changes.items())
        said(f"{worst}: {described} -> p95 backlog age {tuning.p95_age_s:.1f} s")
    return tuning


def write_scaling(path: Path, scaling: StageScaling, note: str) -> None:
    """Set the tuned ``[scaling.<stage>]`` fields in a TOML config, keeping everything else
    (other tables, other keys, comments) as it was."""
    document = tomlkit.parse(path.read_text()) if path.is_file() else tomlkit.document()
    if "scaling" not in document:
        document["scaling"] = tomlkit.table(is_super_table=True)
    tables = document["scaling"]
    if not isinstance(tables, dict):
        raise ConfigError(f"{path}: [scaling] must be a table")
    for stage in SCALED_STAGES:
        if stage not in tables:
            tables[stage] = tomlkit.table()
        table = tables[stage]
        values: ScalingSettings = getattr(scaling, stage)
        for name in TUNED_FIELDS + WRITTEN_AS_SIMULATED:
            table[name] = getattr(values, name)
        table.comment(note)
    path.write_text(tomlkit.dumps(document))
