"""``framepipe scale``: simulate a load curve against the scaling settings, and tune them."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from framepipe.cli.demand import demand_command
from framepipe.cli.errors import Typer
from framepipe.cli.progress import progress_bar
from framepipe.core.cluster_settings import StageScaling
from framepipe.core.errors import ConfigError
from framepipe.core.loader import load_cluster_config, load_settings
from framepipe.core.settings import Settings
from framepipe.core.topology import SCALED_STAGES
from framepipe.scaling.curves import LoadCurve, load_curve
from framepipe.scaling.report import plot, report, write_json
from framepipe.scaling.simulator import SimResult, StageModel, compare, simulate, static_peak
from framepipe.scaling.tuner import NOT_SEARCHED, tune, write_scaling

app = Typer(help="Scaling simulator and tuner (the same KEDA + HPA rules as the cluster).")
console = Console(stderr=True)
out = Console()
app.command("demand")(demand_command)

DEFAULT_THROUGHPUT = Path("bench/results/scaling.json")
# analysis loads dlib's two models (~100 MB) before it pulls.
DEFAULT_STARTUP_S = {"decoder": 5.0, "inference": 20.0, "analysis": 10.0, "encoder": 5.0}
#: what `scale simulate` holds a run to unless told otherwise: the oldest waiting GOP
#: at most this old for 95 % of the day.
DEFAULT_TARGET_AGE_S = 30.0

CurveOpt = Annotated[Path, typer.Option("--curve", help="Load curve: CSV (t_s|hour,cameras) or TOML.")]
ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="framepipe TOML config (\\[scaling.<stage>] tables).")
]
ThroughputOpt = Annotated[
    Path,
    typer.Option(help="Measured per-replica throughput: `make bench` writes bench/results/scaling.json."),
]
RateOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--rate", help="Per-replica GOPs/s of a stage, e.g. --rate inference=1.5 (overrides --throughput)."
    ),
]
StartupOpt = Annotated[
    list[str] | None,
    typer.Option("--startup", help="Seconds from scale-up to serving, e.g. --startup inference=30."),
]
OutOpt = Annotated[Path, typer.Option("--out", help="Directory for the JSON report and the PNG plot.")]


def _pairs(values: list[str] | None, what: str) -> dict[str, float]:
    parsed: dict[str, float] = {}
    for value in values or []:
        stage, sep, number = value.partition("=")
        if not sep or stage not in SCALED_STAGES:
            raise ConfigError(
                f"--{what} {value!r}: use <stage>=<number> with stage one of {', '.join(SCALED_STAGES)}"
            )
        try:
            parsed[stage] = float(number)
        except ValueError:
            raise ConfigError(f"--{what} {value!r}: {number!r} is not a number") from None
        if parsed[stage] <= 0 and what == "rate":
            raise ConfigError(f"--rate {value!r}: throughput must be > 0")
    return parsed


def stage_models(
    curve: LoadCurve,
    throughput: Path,
    rates: list[str] | None,
    startups: list[str] | None,
    settings: Settings,
) -> dict[str, StageModel]:
    """Per-replica throughput per stage: ``--rate`` first, then the benchmark's results.

    A busy replica holds ``in_flight`` messages unacked, which KEDA counts as lag.
    """
    given = _pairs(rates, "rate")
    measured: dict[str, Any] = {}
    if len(given) < len(SCALED_STAGES):
        if not throughput.is_file():
            missing = ", ".join(s for s in SCALED_STAGES if s not in given)
            raise ConfigError(
                f"no throughput for {missing}: run `make bench` (writes {throughput}) "
                "or pass --rate <stage>=<GOPs/s>"
            )
        try:
            measured = json.loads(throughput.read_text())["summary"]["per_replica"]
        except (ValueError, KeyError, TypeError):
            raise ConfigError(f"{throughput} has no summary.per_replica: re-run `make bench`") from None
    startup = DEFAULT_STARTUP_S | _pairs(startups, "startup")
    models = {}
    for stage in SCALED_STAGES:
        rate = given.get(stage) or float(measured.get(stage, {}).get("gops_per_s") or 0.0)
        if rate <= 0:
            raise ConfigError(f"{throughput} has no gops_per_s for {stage}: pass --rate {stage}=<GOPs/s>")
        frames_per_part = settings.decoder.frames_per_part
        per_gop = math.ceil(curve.gop_frames / frames_per_part) if stage == "inference" else 1
        held = float(settings.consumer(stage).in_flight)
        models[stage] = StageModel(rate, per_gop, startup[stage], held_per_replica=held)
    return models


def _stage_settings(config: Path | None) -> Settings:
    return load_settings(config, env={})


def _summary_table(auto: SimResult, fixed: SimResult, target: float | None) -> Table:
    a, f = auto.summary(), fixed.summary()
    table = Table(title="autoscaled vs static peak provisioning")
    for column in ("", "autoscaled", "static peak"):
        table.add_column(column)
    table.add_row(
        "backlog age p50 / p95 / max (s)",
        *(
            f"{s['backlog_age_s']['p50']} / {s['backlog_age_s']['p95']} / {s['backlog_age_s']['max']}"
            for s in (a, f)
        ),
    )
    table.add_row(
        "gateway→encoded p50 / p95 (s)",
        *(f"{s['latency_s']['p50']} / {s['latency_s']['p95']}" for s in (a, f)),
    )
    table.add_row("replica-seconds", f"{a['replica_seconds']:.0f}", f"{f['replica_seconds']:.0f}")
    for stage in SCALED_STAGES:
        table.add_row(
            f"{stage} replicas min..max",
            f"{a['stages'][stage]['replicas_min']}..{a['stages'][stage]['replicas_max']}",
            str(f["stages"][stage]["replicas_max"]),
        )
    if target is not None:
        table.add_row("target p95 backlog age (s)", f"{target}", "")
    return table


def _write(
    curve: LoadCurve,
    scaling: StageScaling,
    models: dict[str, StageModel],
    auto: SimResult,
    fixed: SimResult,
    target: float | None,
    out_dir: Path,
    name: str,
    extra: dict[str, Any] | None = None,
) -> tuple[Path, Path]:
    data = report(curve, scaling, models, auto, fixed, target) | (extra or {})
    json_path = write_json(data, out_dir / f"{name}.json")
    png_path = plot(auto, fixed, out_dir / f"{name}.png", target, title=f"{curve.name}:")
    return json_path, png_path


@app.command("simulate")
def simulate_command(
    curve: CurveOpt,
    config: ConfigOpt = None,
    throughput: ThroughputOpt = DEFAULT_THROUGHPUT,
    rate: RateOpt = None,
    startup: StartupOpt = None,
    target_age: Annotated[
        float, typer.Option(help="Target p95 backlog age (s); a run that misses it exits 1.")
    ] = DEFAULT_TARGET_AGE_S,
    feed_forward: Annotated[
        bool,
        typer.Option(
            "--feed-forward/--lag-only",
            help="Add the cameras' demand trigger beside the lag trigger (where [scaling.<stage>] allows).",
        ),
    ] = True,
    step: Annotated[float, typer.Option(help="Simulation step (s).")] = 1.0,
    cores: Annotated[
        float,
        typer.Option(
            help="Cores all stages' replicas share (the local system on one machine); 0: no limit, "
            "each pod has its own CPU as in a cluster."
        ),
    ] = 0.0,
    out_dir: OutOpt = Path("bench/results"),
) -> None:
    """Replay CURVE with the configured \\[scaling.*] against static peak provisioning."""
    load = load_curve(curve)
    scaling = load_cluster_config(config).scaling
    models = stage_models(load, throughput, rate, startup, _stage_settings(config))
    for line in capacity_warnings(load, scaling, models):
        console.print(f"[yellow]warning:[/] {escape(line)}")
    started = time.perf_counter()
    auto, fixed = compare(load, scaling, models, step_s=step, feed_forward=feed_forward, cores=cores)
    json_path, png_path = _write(
        load, scaling, models, auto, fixed, target_age, out_dir, f"scale-sim-{load.name}"
    )
    out.print(_summary_table(auto, fixed, target_age))
    verdict = verdict_line(auto, target_age)
    ratio = auto.replica_seconds() / fixed.replica_seconds()
    if verdict:
        out.print(f"MISSES the target: {verdict}; the replica-seconds ratio ({ratio:.2f}) is no saving")
    else:
        out.print(
            f"meets the target (p95 backlog age ≤ {target_age} s); replica-seconds autoscaled/static = "
            f"{ratio:.2f} (simulated in {time.perf_counter() - started:.1f} s)"
        )
    out.print(f"report → {json_path}\nplot   → {png_path}")
    if verdict:
        raise typer.Exit(1)


def capacity_warnings(curve: LoadCurve, scaling: StageScaling, models: dict[str, StageModel]) -> list[str]:
    """One line per stage whose max_replicas cannot carry the curve's peak."""
    lines = []
    for stage, needed in static_peak(curve, models).items():
        top = getattr(scaling, stage).max_replicas
        if needed > top:
            lines.append(
                f"{stage}: max_replicas {top} cannot carry the peak of {curve.peak:g} cameras "
                f"({needed} replicas at {models[stage].gops_per_s:g} GOPs/s each); "
                f"raise [scaling.{stage}] max_replicas"
            )
    return lines


def verdict_line(auto: SimResult, target_age: float) -> str:
    """Why a run is not a success (empty when it is): it misses the p95 target, or its
    backlog is still older than the target when the curve ends (it never caught up)."""
    p95 = float(auto.summary()["backlog_age_s"]["p95"])
    final = max((auto.age[s][-1] for s in auto.age if auto.age[s]), default=0.0)
    reasons = []
    if p95 > target_age:
        reasons.append(f"p95 backlog age {p95:g} s > {target_age:g} s")
    if final > target_age:
        reasons.append(f"never caught up (backlog {final:.0f} s old when the curve ends)")
    return "; ".join(reasons)


@app.command("tune")
def tune_command(
    curve: CurveOpt,
    target_age: Annotated[float, typer.Option(help="Target p95 backlog age in seconds.")] = 10.0,
    config: ConfigOpt = None,
    throughput: ThroughputOpt = DEFAULT_THROUGHPUT,
    rate: RateOpt = None,
    startup: StartupOpt = None,
    allow_zero: Annotated[
        bool, typer.Option(help="Let idle stages scale to zero (KEDA activation).")
    ] = False,
    write: Annotated[
        bool, typer.Option("--write", help="Write the result into --config (created if absent).")
    ] = False,
    step: Annotated[float, typer.Option(help="Simulation step (s).")] = 1.0,
    out_dir: OutOpt = Path("bench/results"),
) -> None:
    """Recommend \\[scaling.<stage>] for CURVE so the p95 backlog age stays within --target-age."""
    if write and config is None:
        raise ConfigError("--write needs --config FILE (the TOML file `framepipe k8s render -c FILE` reads)")
    load = load_curve(curve)
    existing = config if config is not None and config.is_file() else None  # --write may create it
    models = stage_models(load, throughput, rate, startup, _stage_settings(existing))
    with progress_bar(console, "[bold]simulating candidate settings") as progress:
        # A day's curve takes a minute or more: each candidate's line as it is known.
        task = progress.add_task("tune", total=None)
        shown: list[str] = []

        def on_step(line: str, done: int, planned: int) -> None:
            shown.append(line)
            progress.console.print(f"  {line}", markup=False, highlight=False)
            progress.update(task, completed=done, total=planned + 1)  # + the static-peak run

        tuning = tune(load, models, target_age, allow_zero=allow_zero, step_s=step, on_step=on_step)
        fixed = simulate(
            load,
            tuning.scaling,
            models,
            static=static_peak(load, models),
            step_s=step,
            label="static peak",
        )
    json_path, png_path = _write(
        load,
        tuning.scaling,
        models,
        tuning.result,
        fixed,
        target_age,
        out_dir,
        f"scale-tune-{load.name}",
        {"tuning_steps": tuning.steps, "met": tuning.met},
    )
    for line in tuning.steps:
        if line in shown:  # printed while it ran
            shown.remove(line)
        else:
            console.print(f"  {line}", markup=False, highlight=False)
    table = Table(title=f"recommended \\[scaling.*] for {load.name} (target p95 backlog age {target_age} s)")
    table.add_column("setting")
    for stage in SCALED_STAGES:
        table.add_column(stage)
    for name in (
        "min_replicas",
        "max_replicas",
        "lag_threshold",
        "activation_lag_threshold",
        "polling_interval_s",
        "scale_up_pods",
        "scale_up_period_s",
        "scale_down_stabilization_s",
        "scale_down_percent",
        "gops_per_replica",
    ):
        table.add_row(name, *(str(getattr(getattr(tuning.scaling, s), name)) for s in SCALED_STAGES))
    out.print(table)
    out.print(NOT_SEARCHED, markup=False, highlight=False)
    out.print(_summary_table(tuning.result, fixed, target_age))
    verdict = "meets" if tuning.met else "MISSES"
    out.print(
        f"{verdict} the target: p95 backlog age {tuning.p95_age_s:.1f} s ≤ {target_age} s"
        if tuning.met
        else f"{verdict} the target: p95 backlog age {tuning.p95_age_s:.1f} s > {target_age} s"
    )
    out.print(f"report → {json_path}\nplot   → {png_path}")
    if write and config is not None:
        write_scaling(
            config,
            tuning.scaling,
            f"tuned by `framepipe scale tune` for {load.name}, target {target_age}s",
        )
        out.print(
            f"wrote \\[scaling.*] into {escape(str(config))}; "
            f"`framepipe k8s render -c {config}` puts it in the ScaledObjects"
        )
    if not tuning.met:
        raise typer.Exit(1)
