"""``framepipe run`` and ``framepipe demo``: the whole pipeline on this machine."""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import TaskID

from framepipe.cli.common import DEFAULT_SAMPLE, ConfigOption, console, out
from framepipe.cli.progress import progress_bar
from framepipe.cli.run_cameras import RunCamera, apply_modes, run_cameras
from framepipe.core import logs
from framepipe.core.errors import ConfigError
from framepipe.core.loader import load_config, load_settings
from framepipe.core.settings import Settings
from framepipe.core.sources import is_live
from framepipe.core.topology import Names, validate_camera_name

PACINGS = ("realtime", "fast")


def _check_writable(output: Path) -> None:
    """The output folder exists (made if need be) and takes a file, or ConfigError in one line."""
    try:
        output.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=output, prefix=".framepipe-probe-"):
            pass
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        raise ConfigError(
            f"output folder {output} cannot be written ({why}): choose another --output"
        ) from None


def _check_run_arguments(pacing: str | None, counts: dict[str, int | None]) -> None:
    """What `run` refuses before it starts anything (one line, exit 2); sources: run_cameras."""
    if pacing is not None and pacing not in PACINGS:
        raise ConfigError(f"--pacing must be one of {', '.join(PACINGS)}, got {pacing!r}")
    for flag, count in counts.items():
        if count is not None and count < 1:
            raise ConfigError(f"{flag} must be at least 1, got {count}")


def _prepare_output(output: Path, camera: str, fresh: bool) -> None:
    """Keep the camera's recording (the run goes on after it), or delete it with ``--fresh``."""
    from framepipe.local.resume import recording_dir, remove_recording, resume_point

    _check_writable(output)
    recording_dir(output, camera)  # refuses a folder framepipe did not write
    if fresh:
        removed = remove_recording(output, camera)
        if removed is not None:
            console.print(
                f"--fresh: removed the previous recording of {camera} in {output / camera} "
                f"({removed.segments} segments, detections and events)"
            )
    elif (kept := resume_point(output, camera)) is not None:
        console.print(
            f"keeping the recording of {camera} in {output / camera} ({kept.segments} segments); "
            f"this run goes on from GOP {kept.next_gop} (--fresh starts clean)"
        )


def _run_local(
    settings: Settings,
    cameras: list[RunCamera],
    once: bool,
    pacing: str | None,
    replicas: dict[str, int],
    *,
    web: bool = False,
    linger: bool = False,
    autoscale: bool | None = None,
    fresh: bool = False,
) -> int:
    from framepipe.local.signals import stop_on_signals
    from framepipe.stages.analysis.reading import AttributeSet

    # Unknown face attributes or a missing mask model: one line now, not a crashing replica.
    AttributeSet(settings).load()
    try:
        with stop_on_signals():  # SIGTERM/SIGHUP drain like Ctrl-C
            return _run_system(
                settings,
                cameras,
                once,
                pacing,
                replicas,
                web=web,
                linger=linger,
                autoscale=autoscale,
                fresh=fresh,
            )
    except KeyboardInterrupt:  # before the system was up, or while it started
        console.print("interrupted: stopped")
        return 130


def _run_system(
    settings: Settings,
    cameras: list[RunCamera],
    once: bool,
    pacing: str | None,
    replicas: dict[str, int],
    *,
    web: bool,
    linger: bool,
    autoscale: bool | None,
    fresh: bool,
) -> int:
    from framepipe.local.progress import CameraResult
    from framepipe.local.supervisor import LocalSystem, require_model

    require_model(settings)
    output = Path(settings.sink.output_dir)
    state_dir = Path(settings.local.state_dir)
    with LocalSystem(settings, state_dir) as system:
        system.claim_state_dir()  # before anything of a running system could be touched
        # The supervisor's JSON events go to their own file; the console keeps the human lines.
        logs.configure(file=state_dir / "logs" / "supervisor.log")
        for camera in cameras:
            _prepare_output(output, camera.name, fresh)
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
        apply_modes(system.settings, cameras)
        gateways = []
        for camera in cameras:
            gateway = system.add_camera(
                camera.name, camera.source, camera.pacing, once=once, thermal_of=camera.thermal_of
            )
            if camera.declared and not once and is_live(camera.source):
                gateway.restart = True  # a declared live camera comes back if its gateway crashes
            gateways.append((camera.name, gateway))
        if len(cameras) > 1 or cameras[0].declared:
            console.print(
                f"cameras: {', '.join(c.name + (' (config)' if c.declared else '') for c in cameras)}"
            )
        if not once:
            where = output / cameras[0].name if len(cameras) == 1 else output
            console.print(f"running; HLS output in {where}; Ctrl-C to stop")
            system.watch_cameras()  # `framepipe cameras add|remove` while this runs
            try:
                while True:
                    system.supervise()
                    system.sync_cameras()
                    time.sleep(0.5)
            except KeyboardInterrupt:
                console.print("stopping: draining stages...")
            return 0
        results: list[CameraResult] = []
        with progress_bar(console) as progress:
            for name, gateway in gateways:  # they run at once; waiting for each in turn is enough
                task = progress.add_task(f"{name}: GOPs written", total=None)

                def on_progress(count: int, task: TaskID = task) -> None:
                    progress.update(task, completed=count)

                try:
                    results.append(system.wait_for_camera(name, gateway, on_progress=on_progress))
                except KeyboardInterrupt:
                    console.print("interrupted: draining stages...")
                    return 130
        complete = all(result.complete for result in results)
        if console_url and linger and complete:
            segments = sum(result.segments for result in results)
            out.print(f"done: {segments} segments; console still at {console_url} (Ctrl-C to stop)")
            try:
                while True:
                    system.supervise()
                    time.sleep(0.5)
            except KeyboardInterrupt:
                console.print("stopping...")
    for result in results:
        if result.complete:
            out.print(f"{result.segments} segments → {result.playlist}")
            out.print(f"detections → {output / result.camera / 'detections.jsonl'}")
        else:
            console.print(f"[bold red]error:[/] {escape(f'{result.camera}: {result.reason}')}")
    return 0 if complete else 1


def run(
    source: Annotated[
        str | None,
        typer.Option(help="Video file (or URL) to process (optional when the config declares [[cameras]])."),
    ] = None,
    camera: Annotated[str, typer.Option(help="Camera name.")] = "cam1",
    output: Annotated[
        Path | None, typer.Option(help="Output directory (default: the sink.output_dir setting, ./output).")
    ] = None,
    once: Annotated[bool, typer.Option("--once", help="Exit when every GOP of the file is written.")] = False,
    pacing: Annotated[str | None, typer.Option(help="realtime | fast (default: fast with --once).")] = None,
    decoders: Annotated[
        int | None, typer.Option(help="Decoder processes (default: decoder.replicas, or autoscaled).")
    ] = None,
    inferencers: Annotated[
        int | None, typer.Option(help="Inference processes (default: inference.replicas, or autoscaled).")
    ] = None,
    inference: Annotated[int | None, typer.Option("--inference", hidden=True)] = None,  # the old name
    encoders: Annotated[
        int | None, typer.Option(help="Encoder processes (default: encoder.replicas, or autoscaled).")
    ] = None,
    autoscale: Annotated[
        bool | None,
        typer.Option(
            "--autoscale/--no-autoscale",
            help="Scale stages on backlog like KEDA (default: local.autoscale, off with fixed counts).",
        ),
    ] = None,
    fresh: Annotated[
        bool,
        typer.Option(
            "--fresh", help="Delete the camera's previous recording first (default: keep it, go on after it)."
        ),
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Start the whole pipeline locally (embedded NATS) on one source."""
    validate_camera_name(camera)
    loaded = load_config(config)
    settings = loaded.settings
    if output is not None:
        settings = settings.replace(sink={"output_dir": str(output)})
    if inference is not None and inferencers is not None:
        raise ConfigError("--inference is the old name of --inferencers: give one of them")
    inference_flag = "--inference" if inference is not None else "--inferencers"
    inference = inference if inference is not None else inferencers
    counts = {"--decoders": decoders, inference_flag: inference, "--encoders": encoders}
    _check_run_arguments(pacing, counts)
    pacing = pacing or ("fast" if once else None)  # a declared camera's own pacing comes first
    cameras = run_cameras(camera, source, pacing, loaded.cluster.cameras)
    replicas = {
        k: v
        for k, v in ((Names.DECODER, decoders), (Names.INFERENCE, inference), (Names.ENCODER, encoders))
        if v is not None
    }
    code = _run_local(
        settings,
        cameras,
        once,
        pacing,
        replicas,
        autoscale=autoscale,
        fresh=fresh,
    )
    raise typer.Exit(code)


#: the person of the sample clip: NASA astronaut Eileen Collins (scikit-image's photo).
SAMPLE_PERSON = "eileen_collins"


def _enrol_sample_person(settings: Settings) -> None:
    """The demo names the astronaut: enrol her from the sample's source photo, once."""
    from framepipe.core.gallery import FileGallery, Person
    from framepipe.media.sample import astronaut
    from framepipe.stages.analysis.embedder import FaceEmbedder

    files = FileGallery(settings.analysis.gallery_path(settings.local.state_dir))
    if any(p.name == SAMPLE_PERSON for p in files.people()):
        return
    with console.status(f"enrolling {SAMPLE_PERSON} from the sample's photo (first run)..."):
        photo = astronaut()
        descriptor = FaceEmbedder().enrol_image(photo, "astronaut.png", settings.analysis.min_face_px)
        files.put(Person(SAMPLE_PERSON, descriptor[None, :], ("skimage:astronaut.png",)))


def demo(
    output: Annotated[Path, typer.Option(help="Output directory.")] = Path("output"),
    pacing: Annotated[str, typer.Option(help="realtime | fast")] = "fast",
    web: Annotated[bool, typer.Option("--console/--no-console", help="Serve the web console.")] = True,
    config: ConfigOption = None,
) -> None:
    """Run the sample clip (a moving face) through the whole pipeline."""
    from framepipe.media.sample import make_clip
    from framepipe.stages.inference.models import build_models

    settings = load_settings(config).replace(sink={"output_dir": str(output)})
    if not settings.inference.model_path.is_file() and not settings.inference.model_file:
        with console.status("building the face model (first run)..."):
            build_models(settings.inference.models_path)
    if not DEFAULT_SAMPLE.is_file():
        with console.status(f"generating the sample clip {DEFAULT_SAMPLE} (first run)..."):
            make_clip(DEFAULT_SAMPLE)
    _enrol_sample_person(settings)
    # The demo replays one sample clip: each demo starts with a clean recording.
    linger = web and sys.stdout.isatty()
    sample = str(DEFAULT_SAMPLE)
    cameras = [RunCamera("demo", sample, pacing)]
    code = _run_local(settings, cameras, True, pacing, {}, web=web, linger=linger, fresh=True)
    if code == 0:
        playlist = output / "demo" / "index.m3u8"
        out.print(f"\nAnnotated video: {playlist.resolve()}")
        out.print(f"Play it with:    ffplay {playlist}  (or any HLS player: VLC, Safari, hls.js)")
    raise typer.Exit(code)
