"""The plot of :mod:`bench.scaling_reality`: the real run against the simulator."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.common import pyplot, save_figure
from framepipe.scaling.simulator import SimResult


def plot(run: dict[str, Any], stages: tuple[str, ...], raw: SimResult, tuned: SimResult, path: Path) -> bool:
    """Replicas (real solid, simulated dotted) and the oldest backlog, real against both fits."""
    plt = pyplot()
    if plt is None:
        return False
    t = [s["t_s"] for s in run["samples"]]
    fig, axes = plt.subplots(2, 1, figsize=(10, 6.5), sharex=True)
    colors = ("tab:blue", "tab:orange", "tab:purple", "tab:green")
    for stage, color in zip(stages, colors, strict=False):
        axes[0].step(
            t,
            [s["replicas"][stage] for s in run["samples"]],
            where="post",
            color=color,
            label=f"{stage} real",
        )
        axes[0].step(
            tuned.times, tuned.replicas[stage], where="post", color=color, linestyle=":", label=f"{stage} sim"
        )
    axes[0].set_ylabel("replicas")
    axes[0].legend(fontsize=7, ncol=3)
    axes[1].plot(t, [max(s["age_s"].values()) for s in run["samples"]], color="black", label="real")
    for sim, style, label in ((raw, "--", "sim, uncalibrated"), (tuned, ":", "sim, calibrated")):
        axes[1].plot(
            sim.times,
            [max(sim.age[s][i] for s in stages) for i in range(len(sim.times))],
            linestyle=style,
            label=label,
        )
    axes[1].set_ylabel("oldest backlog (s)")
    axes[1].set_xlabel("s")
    axes[1].legend(fontsize=8)
    return save_figure(plt, fig, path)
