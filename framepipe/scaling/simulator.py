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

The same run with every stage fixed at the replicas its peak load needs gives
the baseline: *static peak provisioning*.
"""

from __future__ import annotations

import bisect
import csv
import dataclasses
import functools
import json
import math
import tomllib
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from framepipe.core.cluster_settings import ScalingSettings, StageScaling
from framepipe.core.errors import ConfigError
from framepipe.core.topology import SCALED_STAGES
from framepipe.scaling.autoscale import StageScaler

EPSILON = 1e-9


# -- the load -------------------------------------------------------------
@dataclass(frozen=True)
class LoadCurve:
    """Cameras over time, stepwise: ``points[i]`` holds until the next point's time."""

    points: tuple[tuple[float, float], ...]
    duration_s: float
    fps: float = 30.0
    gop_frames: int = 30
    name: str = "curve"

    def __post_init__(self) -> None:
        if not self.points:
            raise ConfigError(f"load curve {self.name}: no points")
        times = [t for t, _ in self.points]
        if times != sorted(times) or times[0] != 0:
            raise ConfigError(f"load curve {self.name}: times must start at 0 and increase")
        if any(c < 0 for _, c in self.points):
            raise ConfigError(f"load curve {self.name}: camera counts must be >= 0")
        if self.duration_s <= times[-1]:
            raise ConfigError(f"load curve {self.name}: duration_s must be after the last point")
        if self.fps <= 0 or self.gop_frames < 1:
            raise ConfigError(f"load curve {self.name}: fps must be > 0 and gop_frames >= 1")

    def cameras(self, t: float) -> float:
        index = bisect.bisect_right(self.times, t) - 1
        return self.points[max(0, index)][1]

    @functools.cached_property
    def times(self) -> list[float]:
        return [t for t, _ in self.points]

    @property
    def peak(self) -> float:
        return max(c for _, c in self.points)

    @property
    def gops_per_camera_s(self) -> float:
        return self.fps / self.gop_frames


def _number(where: str, raw: Any) -> float:
    try:
        return float(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: expected a number, got {raw!r}") from None


def load_curve(path: str | Path) -> LoadCurve:
    """A curve from CSV (``t_s,cameras``, or ``hour,cameras``; ``#`` comments; optional
    ``# fps=…``/``# gop_frames=…``/``# duration_s=…`` lines) or TOML (``fps``,
    ``gop_frames``, ``duration_s`` and ``[[point]] t_s = …, cameras = …``)."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"load curve {file} does not exist")
    options: dict[str, float] = {}
    points: list[tuple[float, float]] = []
    if file.suffix == ".toml":
        try:
            data = tomllib.loads(file.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"load curve {file} is not valid TOML: {exc}") from None
        for key in ("fps", "gop_frames", "duration_s"):
            if key in data:
                options[key] = _number(f"{file}: {key}", data[key])
        for i, point in enumerate(data.get("point", [])):
            t = point["t_s"] if "t_s" in point else _number(f"{file}: point {i}", point.get("hour")) * 3600
            points.append(
                (_number(f"{file}: point {i} t_s", t), _number(f"{file}: point {i}", point.get("cameras")))
            )
    else:
        lines = file.read_text().splitlines()
        for line in lines:
            if line.startswith("#") and "=" in line:
                key, _, value = line.lstrip("# ").partition("=")
                if key.strip() in ("fps", "gop_frames", "duration_s"):
                    options[key.strip()] = _number(f"{file}: {key.strip()}", value.strip())
        rows = csv.DictReader(line for line in lines if line.strip() and not line.startswith("#"))
        for n, row in enumerate(rows, start=2):
            if "t_s" in row:
                t = _number(f"{file}:{n} t_s", row["t_s"])
            elif "hour" in row:
                t = _number(f"{file}:{n} hour", row["hour"]) * 3600
            else:
                raise ConfigError(f"{file}: needs a t_s or hour column (got {', '.join(row)})")
            points.append((t, _number(f"{file}:{n} cameras", row.get("cameras"))))
    if not points:
        raise ConfigError(f"load curve {file} has no points")
    duration = options.get("duration_s", points[-1][0] + 3600)
    return LoadCurve(
        tuple(points),
        duration,
        fps=options.get("fps", 30.0),
        gop_frames=int(options.get("gop_frames", 30)),
        name=file.stem,
    )


# -- the model --------------------------------------------------------------
@dataclass(frozen=True)
class StageModel:
    """What the simulator needs to know about one stage."""

    gops_per_s: float  # one ready replica's throughput
    messages_per_gop: int = 1
    startup_s: float = 20.0
    #: messages a busy replica holds delivered but unacked (KEDA counts them as lag).
    held_per_replica: float = 1.0

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
) -> SimResult:
    """Run the curve; ``static`` fixes each stage's replicas instead of autoscaling."""
    stages = SCALED_STAGES
    scalers = {s: StageScaler(getattr(scaling, s)) for s in stages}
    queues = {s: _Queue() for s in stages}
    desired = {s: (static or {}).get(s, max(getattr(scaling, s).min_replicas, 0)) for s in stages}
    starting: dict[str, list[float]] = {s: [] for s in stages}  # ready-at times of new pods
    ready = dict(desired)
    busy = dict.fromkeys(stages, 0.0)  # replicas working, from last step's throughput
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
        for index, stage in enumerate(stages):
            model = models[stage]
            if static is None and t >= next_poll[stage]:
                next_poll[stage] = t + scalers[stage].scaling.polling_interval_s
                # num_pending + num_ack_pending: waiting, plus what busy replicas hold.
                lag = math.ceil(queues[stage].size + busy[stage] * model.held_per_replica - EPSILON)
                decision = scalers[stage].decide(t, desired[stage], lag)
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
            served = queues[stage].take(ready[stage] * model.messages_per_s * step_s)
            busy[stage] = sum(m for _, m in served) / (model.messages_per_s * step_s)
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


def static_peak(curve: LoadCurve, models: dict[str, StageModel]) -> dict[str, int]:
    """Replicas each stage needs to keep up with the curve's peak."""
    peak_gops = curve.peak * curve.gops_per_camera_s
    return {s: max(1, math.ceil(peak_gops / models[s].gops_per_s - EPSILON)) for s in SCALED_STAGES}


def compare(
    curve: LoadCurve, scaling: StageScaling, models: dict[str, StageModel], step_s: float = 1.0
) -> tuple[SimResult, SimResult]:
    """The autoscaled run and the static-peak run of the same curve."""
    auto = simulate(curve, scaling, models, step_s=step_s)
    fixed = simulate(
        curve, scaling, models, static=static_peak(curve, models), step_s=step_s, label="static peak"
    )
    return auto, fixed


def report(
    curve: LoadCurve,
    scaling: StageScaling,
    models: dict[str, StageModel],
    auto: SimResult,
    fixed: SimResult,
    target_age_s: float | None = None,
    sample_every_s: float = 60.0,
) -> dict[str, Any]:
    """JSON-ready: inputs, both summaries, the ratio, and a down-sampled timeline."""
    every = max(1, round(sample_every_s / auto.step_s))
    a, f = auto.summary(), fixed.summary()
    out: dict[str, Any] = {
        "curve": {
            "name": curve.name,
            "duration_s": curve.duration_s,
            "fps": curve.fps,
            "gop_frames": curve.gop_frames,
            "peak_cameras": curve.peak,
            "points": [list(p) for p in curve.points],
        },
        "models": {s: dataclasses.asdict(m) for s, m in models.items()},
        "scaling": {s: dataclasses.asdict(getattr(scaling, s)) for s in SCALED_STAGES},
        "static_replicas": {s: max(fixed.replicas[s]) for s in SCALED_STAGES},
        "autoscaled": a,
        "static_peak": f,
        "replica_seconds_ratio": round(a["replica_seconds"] / f["replica_seconds"], 3)
        if f["replica_seconds"]
        else None,
        "timeline": {
            "t_s": auto.times[::every],
            "cameras": auto.cameras[::every],
            "replicas": {s: auto.replicas[s][::every] for s in SCALED_STAGES},
            "backlog_age_s": {s: [round(v, 2) for v in auto.age[s][::every]] for s in SCALED_STAGES},
        },
    }
    if target_age_s is not None:
        out["target_backlog_age_s"] = target_age_s
        out["within_target"] = a["backlog_age_s"]["p95"] <= target_age_s
    return out


def plot(
    auto: SimResult, fixed: SimResult, path: Path, target_age_s: float | None = None, title: str = ""
) -> Path:
    """Cameras, replicas (autoscaled solid, static dashed) and backlog age over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hours = [t / 3600 for t in auto.times]
    fig, axes = plt.subplots(3, 1, figsize=(11, 8.5), sharex=True)
    axes[0].step(hours, auto.cameras, where="post", color="black")
    axes[0].set_ylabel("cameras")
    for stage, color in zip(SCALED_STAGES, ("tab:blue", "tab:orange", "tab:green"), strict=True):
        axes[1].step(hours, auto.replicas[stage], where="post", color=color, label=f"{stage}")
        axes[1].axhline(max(fixed.replicas[stage]), color=color, linestyle="--", linewidth=0.8)
        axes[2].plot(hours, auto.age[stage], color=color, linewidth=0.8, label=stage)
    axes[1].set_ylabel("replicas\n(dashed: static peak)")
    axes[1].legend(loc="upper left", fontsize=8)
    if target_age_s is not None:
        axes[2].axhline(target_age_s, color="red", linestyle=":", label="target")
    axes[2].set_ylabel("backlog age (s)")
    axes[2].set_xlabel("hour")
    axes[2].legend(loc="upper left", fontsize=8)
    a, f = auto.summary(), fixed.summary()
    fig.suptitle(
        f"{title}  p95 backlog age {a['backlog_age_s']['p95']} s; replica-seconds "
        f"{a['replica_seconds']:.0f} vs static {f['replica_seconds']:.0f}",
        fontsize=10,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def write_json(data: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")
    return path


def with_stage(scaling: StageScaling, stage: str, **changes: Any) -> StageScaling:
    current: ScalingSettings = getattr(scaling, stage)
    return scaling.replace(**{stage: dataclasses.replace(current, **changes)})
