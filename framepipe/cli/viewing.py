"""Looking at what runs and what it made: status, the web console, recordings."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import numpy.typing as npt
import typer

from framepipe.cli.common import ConfigOption, attached_settings, console, nats_reachable, out
from framepipe.core.bus import FIRST_CONNECT_WAIT_S
from framepipe.local.runtime import read_runtime, runtime_path


def status(
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Live view, refreshed until Ctrl-C.")] = False,
    interval: Annotated[float, typer.Option(help="Seconds between refreshes with --watch.")] = 2.0,
) -> None:
    """Streams, consumer lag and local stage processes."""
    from framepipe.local.status import collect_status, render_status, watch_status

    settings, runtime = attached_settings(config)
    if watch:
        watch_status(settings, runtime_path(settings.local.state_dir), out, interval)
        return
    report = asyncio.run(collect_status(settings, runtime))
    if as_json:
        out.print_json(json.dumps(report))
        return
    for table in render_status(report):
        out.print(table)


def web(
    host: Annotated[str, typer.Option(help="Address to bind (loopback unless told).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8090,
    window: Annotated[int, typer.Option(help="Segments in a live playlist.")] = 6,
    runtime_file: Annotated[
        Path | None,
        typer.Option(help="Local runtime.json (replicas; default: <local.state_dir>/runtime.json)."),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Serve HLS (/<camera>/index.m3u8) from the OUTPUT stream and the web console."""
    from framepipe.web.serve import serve

    settings, runtime = attached_settings(config)
    path = runtime_file or runtime_path(settings.local.state_dir)
    if runtime is None and not nats_reachable(settings):
        console.print(
            f"no framepipe system is running (nothing at {settings.nats.url}, no {path}): "
            f"waiting up to {FIRST_CONNECT_WAIT_S:.0f} s for it; start `framepipe run --source ...`",
            markup=False,
            highlight=False,
        )

    def replicas() -> dict[str, int]:
        runtime = read_runtime(path)
        return runtime.replicas() if runtime else {}

    serve(settings, host, port, window, replicas, describe=chip_describer(), runtime_file=path)


def export(
    path: Annotated[Path, typer.Argument(help="The MP4 file to write.")],
    camera: Annotated[str, typer.Option(help="Camera name.")],
    since: Annotated[str, typer.Option(help="Start: now, 15m (ago), epoch seconds or ISO 8601.")] = "1d",
    until: Annotated[str, typer.Option(help="End, same formats.")] = "now",
    burn_in: Annotated[
        bool, typer.Option("--burn-in", help="Draw the boxes into the video (re-encodes; for overlay mode).")
    ] = False,
    output_dir: Annotated[
        Path | None,
        typer.Option(help="The recordings' folder (default: the running system's, else sink.output_dir)."),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Cut a recording of one camera into an MP4 (no re-encode unless --burn-in): from the OUTPUT
    stream while a system runs, else from the recording on disk."""
    from framepipe.web.export import export as do_export
    from framepipe.web.export import parse_when

    settings, runtime = attached_settings(config)
    running = runtime is not None or nats_reachable(settings)
    if output_dir is None and runtime is not None and runtime.output_dir:
        output_dir = Path(runtime.output_dir)
    result = do_export(
        settings, camera, parse_when(since), parse_when(until), path, burn_in=burn_in,
        stream=running, output_dir=output_dir,
    )  # fmt: skip
    out.print(
        f"{result.segments} segments (GOPs {result.first_gop}..{result.last_gop}, "
        f"{result.duration_s:.1f}s) from {result.source} → {result.path}"
    )


def chip_describer() -> Callable[[npt.NDArray[np.uint8]], npt.NDArray[np.float32]]:
    """The console's enrol-from-snapshot: dlib's descriptor of an aligned chip, loaded on first use."""
    import threading

    lock = threading.Lock()
    loaded: list[Any] = []

    def describe(chip: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        from framepipe.stages.analysis.embedder import FaceEmbedder

        with lock:
            if not loaded:
                loaded.append(FaceEmbedder())
            descriptor: npt.NDArray[np.float32] = loaded[0].describe([chip])[0]
        return descriptor

    return describe
