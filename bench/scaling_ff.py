"""Feed-forward + lag against lag-only on a load curve, in the simulator (not in CI).

Both runs use the same curve, the same ``[scaling.*]`` (the shipped defaults
unless ``-c``) and the same per-replica rates (``bench/results/scaling.json``,
measured by ``bench.scaling``); the only difference is the demand trigger.
Writes ``bench/results/scaling-ff.json`` and ``scaling-ff.png`` (replicas and
backlog age of both runs over the day).

    python -m bench.scaling_ff [--curve bench/curves/office-day.csv] [-c framepipe.toml]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from bench.common import RESULTS, pyplot, ratio, save_figure, write_result
from framepipe.cli.scale import DEFAULT_STARTUP_S, DEFAULT_THROUGHPUT, stage_models
from framepipe.core.loader import load_cluster_config, load_settings
from framepipe.core.topology import SCALED_STAGES
from framepipe.scaling.curves import load_curve
from framepipe.scaling.simulator import SimResult, percentile, simulate


def figures(result: SimResult) -> dict[str, Any]:
    summary = result.summary()
    oldest = [max(result.age[s][i] for s in result.age) for i in range(len(result.times))]
    return {
        "backlog_age_s": summary["backlog_age_s"] | {"p99": round(percentile(oldest, 99), 2)},
        "latency_s": summary["latency_s"],
        "replica_seconds": summary["replica_seconds"],
        "replicas_max": {s: summary["stages"][s]["replicas_max"] for s in SCALED_STAGES},
    }


def plot(both: SimResult, lag_only: SimResult, path: Path) -> bool:
    plt = pyplot()
    if plt is None:
        return False
    hours = [t / 3600 for t in both.times]
    fig, axes = plt.subplots(3, 1, figsize=(11, 8.5), sharex=True)
    axes[0].step(hours, both.cameras, where="post", color="black")
    axes[0].set_ylabel("cameras")
    for stage, color in zip(SCALED_STAGES, ("tab:blue", "tab:orange", "tab:green"), strict=True):
        axes[1].step(
            hours, both.replicas[stage], where="post", color=color, label=f"{stage} feed-forward+lag"
        )
        axes[1].step(
            hours,
            lag_only.replicas[stage],
            where="post",
            color=color,
            linestyle=":",
            label=f"{stage} lag only",
        )
    axes[1].set_ylabel("replicas")
    axes[1].legend(loc="upper left", fontsize=7, ncol=3)
    oldest = {
        label: [max(r.age[s][i] for s in r.age) for i in range(len(r.times))]
        for label, r in (("feed-forward+lag", both), ("lag only", lag_only))
    }
    for (label, ages), style in zip(oldest.items(), ("-", ":"), strict=True):
        axes[2].plot(hours, ages, linestyle=style, color="tab:red", linewidth=0.8, label=label)
    axes[2].set_ylabel("oldest backlog (s)")
    axes[2].set_xlabel("hour of the day")
    axes[2].legend(loc="upper left", fontsize=8)
    fig.suptitle("feed-forward + lag vs lag only (same curve, settings and rates)", fontsize=10)
    fig.tight_layout()
    return save_figure(plt, fig, path)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--curve", type=Path, default=Path("bench/curves/office-day.csv"))
    parser.add_argument("-c", "--config", type=Path, default=None)
    parser.add_argument("--throughput", type=Path, default=DEFAULT_THROUGHPUT)
    parser.add_argument("--step", type=float, default=1.0)
    args = parser.parse_args(argv)
    curve = load_curve(args.curve)
    scaling = load_cluster_config(args.config).scaling
    models = stage_models(curve, args.throughput, None, None, load_settings(args.config, env={}))
    both = simulate(curve, scaling, models, step_s=args.step)
    lag_only = simulate(curve, scaling, models, step_s=args.step, feed_forward=False)
    a, b = figures(both), figures(lag_only)
    result: dict[str, Any] = {
        "params": {
            "curve": str(args.curve),
            "step_s": args.step,
            "rates_gops_per_s": {s: m.gops_per_s for s, m in models.items()},
            "startup_s": DEFAULT_STARTUP_S,
        },
        "feed_forward_and_lag": a,
        "lag_only": b,
        "summary": {
            "replica_seconds_ratio": ratio(a["replica_seconds"], b["replica_seconds"]),
            "p95_backlog_age_s": [a["backlog_age_s"]["p95"], b["backlog_age_s"]["p95"]],
            "max_backlog_age_s": [a["backlog_age_s"]["max"], b["backlog_age_s"]["max"]],
        },
    }
    plot(both, lag_only, RESULTS / "scaling-ff.png")
    return write_result(result, RESULTS / "scaling-ff.json", "python -m bench.scaling_ff")


if __name__ == "__main__":
    main()
