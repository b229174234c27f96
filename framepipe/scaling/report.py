"""What a simulation run writes: the JSON report and the PNG of replicas and backlog age."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from framepipe.core.cluster_settings import StageScaling
from framepipe.core.topology import SCALED_STAGES
from framepipe.scaling.curves import LoadCurve
from framepipe.scaling.simulator import SimResult, StageModel


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
    palette = ("tab:blue", "tab:orange", "tab:purple", "tab:green", "tab:red", "tab:brown")
    for stage, color in zip(SCALED_STAGES, palette, strict=False):
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
