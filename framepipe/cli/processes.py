"""What a Deployment (or the local supervisor) runs: one stage, one camera, the setup."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import signal
from typing import Annotated

import structlog
import typer

from framepipe.cli.common import ConfigOption, console
from framepipe.core import topology
from framepipe.core.allocator import tune_allocator
from framepipe.core.bus import setup_topology
from framepipe.core.errors import ConfigError
from framepipe.core.loader import load_settings
from framepipe.core.runner import run_stage
from framepipe.stages import load_stages


def setup(config: ConfigOption = None) -> None:
    """Create or update every stream, consumer and KV bucket, then exit."""
    settings = load_settings(config)
    asyncio.run(setup_topology(settings))
    console.print(f"topology ready on {settings.nats.url}")


def _exit_before_work(signum: int, frame: object, event: str = "stage.stopped_before_start") -> None:
    # One raw write, not a logger call: the handler can interrupt the main thread inside a
    # write to the same buffered stderr, and re-entering it raises instead of exiting cleanly.
    os.write(
        2,
        json.dumps({"event": event, "signal": signum, "level": "info"}).encode() + b"\n",
    )
    # os._exit, not SystemExit: nothing is held yet, and an exception raised wherever the
    # signal lands can be caught or rewrapped there (an import's __set_name__ turns it into
    # RuntimeError, exit 1). Log lines are flushed as written (core.logs), so none is lost.
    os._exit(0)


log = structlog.get_logger("framepipe.process")


def _tune_allocator() -> None:
    """Before anything is loaded: the heap keeps each GOP's buffers for the next one."""
    tuning = tune_allocator()
    if not tuning.tuned:
        log.info("process.allocator_default", reason=tuning.reason)


_STAGE_NAMES = " | ".join(spec.name for spec in topology.consumer_stages())


def stage(
    name: Annotated[str, typer.Argument(help=_STAGE_NAMES)],
    config: ConfigOption = None,
    backend: Annotated[
        str | None, typer.Option(help="inference backend: onnxruntime | tensorrt (overrides config)")
    ] = None,
) -> None:
    """Run one stage process (what a Kubernetes Deployment runs)."""
    # A replica drained while it is still loading (a scale-down right after a scale-up)
    # holds no messages yet: exit cleanly. The runner replaces this before it fetches.
    signal.signal(signal.SIGTERM, _exit_before_work)
    _tune_allocator()
    settings = load_settings(config)
    if backend is not None:
        settings = settings.replace(inference={"backend": backend})
    spec = topology.stage_spec(name)
    if spec.per_camera:
        raise ConfigError(f"{name} runs per camera: use `framepipe {name} --camera NAME --source URL`")
    run_stage(load_stages(spec, settings), settings)


def gateway(
    camera: Annotated[str, typer.Option(help="Camera name (letters, digits, _ -).")],
    source: Annotated[str, typer.Option(help="File path or URL.")],
    pacing: Annotated[
        str | None, typer.Option(help="realtime | fast (default: the gateway.pacing setting, realtime).")
    ] = None,
    once: Annotated[
        bool, typer.Option("--once", help="Live source: fail instead of reconnecting; its end ends the run.")
    ] = False,
    thermal_of: Annotated[
        str | None,
        typer.Option("--thermal-of", help="A radiometric thermal camera paired with this visible camera."),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Publish a camera/file as GOPs to the VIDEO stream (a thermal camera: to THERMAL)."""
    # Stopped while it loads (before the loop's handlers): exit cleanly, as a stage does.
    signal.signal(signal.SIGTERM, functools.partial(_exit_before_work, event="gateway.stopped_before_start"))
    _tune_allocator()
    from framepipe.stages.gateway import Gateway

    gw = Gateway(load_settings(config), camera, source, pacing, once=once, thermal_of=thermal_of)

    async def go() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, gw.stop)
        await gw.run()

    asyncio.run(go())
