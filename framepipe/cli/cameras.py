"""``framepipe cameras``: add, remove and list cameras of the running system or the cluster."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Annotated, Any

import typer

from framepipe.cli.errors import Typer
from framepipe.cluster.cameras import KubeCameras, camera_objects
from framepipe.core import bus
from framepipe.core.cluster_settings import ClusterConfig
from framepipe.core.errors import BusError, ConfigError, UnreachableError
from framepipe.core.loader import load_config, load_settings
from framepipe.core.settings import Settings
from framepipe.core.sources import redact
from framepipe.core.topology import validate_camera_name
from framepipe.local.cameras import (
    CameraSpec,
    add_camera,
    check_source,
    check_thermal_pairing,
    delete_camera,
    list_cameras,
)
from framepipe.local.runtime import attach_to_running, runtime_path
from framepipe.stages.output_modes import check_mode, set_mode

app = Typer(help="Add, remove and list cameras of the running system (or the cluster).")
ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="TOML settings file.")]
KubeOpt = Annotated[
    bool,
    typer.Option("--kubernetes", "-k", help="Act on the cluster (KUBECONFIG) instead of the local system."),
]


def _local_settings(config: Path | None) -> Settings:
    """The settings, pointed at the NATS of a running `framepipe run` when there is one."""
    settings, _ = attach_to_running(load_settings(config))
    runtime = runtime_path(settings.local.state_dir)
    try:  # fail in one line instead of the client's endless reconnect loop
        socket.create_connection(settings.nats.host_port, timeout=settings.nats.connect_timeout_s).close()
    except OSError:
        raise UnreachableError(
            f"no framepipe system is running (nothing at {settings.nats.url}, no {runtime}): "
            "start `framepipe run --source ...` first"
        ) from None
    return settings


def _kube(config: Path | None) -> tuple[Settings, ClusterConfig, KubeCameras]:
    loaded = load_config(config)
    return loaded.settings, loaded.cluster, KubeCameras(loaded.cluster.k8s.namespace)


def _local(call: Any) -> Any:
    """Run a coroutine against the local system; a NATS time-out is one line too."""
    try:
        return asyncio.run(call)
    except (TimeoutError, OSError) as exc:
        raise BusError(
            f"talking to NATS failed ({type(exc).__name__}: {exc}); is `framepipe run` up?"
        ) from None


def _one_of(what: str, argument: str, positional: str | None, option: str, given: str | None) -> str:
    """``cameras add NAME SOURCE`` or ``--camera NAME --source SOURCE`` (as `run`), not both."""
    if positional is not None and given is not None and positional != given:
        raise ConfigError(f"the camera's {what} is given twice ({argument} and {option}): give one")
    value = positional if positional is not None else given
    if not value:
        raise ConfigError(f"a camera needs a {what}: `cameras add NAME SOURCE` or {option} ...")
    return value


@app.command("add")
def add(
    name: Annotated[str | None, typer.Argument(help="Camera name (letters, digits, '_' or '-').")] = None,
    source: Annotated[str | None, typer.Argument(help="rtsp://\\[user:pass@]host/path or a file.")] = None,
    camera_option: Annotated[
        str | None, typer.Option("--camera", help="The name, as `run --camera` takes it (instead of NAME).")
    ] = None,
    source_option: Annotated[
        str | None,
        typer.Option("--source", help="The source, as `run --source` takes it (instead of SOURCE)."),
    ] = None,
    pacing: Annotated[
        str | None,
        typer.Option(help="realtime | fast (files only; default: the gateway.pacing setting, realtime)."),
    ] = None,
    thermal_of: Annotated[
        str | None,
        typer.Option(
            "--thermal-of",
            metavar="VISIBLE",
            help="A radiometric thermal camera paired with the visible camera VISIBLE (fever screening).",
        ),
    ] = None,
    kubernetes: KubeOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Start processing a camera now (the running system picks it up; no restart)."""

    name = _one_of("name", "NAME", name, "--camera", camera_option)
    source = _one_of("source", "SOURCE", source, "--source", source_option)
    validate_camera_name(name)
    check_source(source)
    if thermal_of:
        validate_camera_name(thermal_of)
    if kubernetes:
        settings, cluster, kube = _kube(config)
        if thermal_of:
            cameras = [CameraSpec(camera, "", thermal_of=of) for camera, of in kube.pairings()]
            check_thermal_pairing(CameraSpec(name, source, thermal_of=thermal_of), cameras)
        kube.add(*camera_objects(settings, cluster, name, source, thermal_of=thermal_of))
    else:
        settings = _local_settings(config)
        _, runtime = attach_to_running(settings)
        run_camera = runtime is not None and any(
            p.name == f"gateway-{name}" and p.alive for p in runtime.processes
        )
        if run_camera and not any(spec.name == name for spec in _local(list_cameras(settings))):
            raise ConfigError(
                f"camera {name} is the one `framepipe run --source` started: choose another name"
            )
        running = [p.name.removeprefix("gateway-") for p in runtime.processes if p.alive] if runtime else []
        _local(add_camera(settings, CameraSpec(name, source, pacing, thermal_of), running))
    paired = f", thermal camera of {thermal_of}" if thermal_of else ""
    typer.echo(f"camera {name} added ({redact(source)}{paired})")


@app.command("remove")
def remove(
    name: Annotated[str, typer.Argument(help="Camera name.")],
    kubernetes: KubeOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Stop processing a camera (its gateway drains and exits)."""

    validate_camera_name(name)
    if kubernetes:
        found = _kube(config)[2].remove(name)
    else:
        found = _local(delete_camera(_local_settings(config), name))
    if not found:
        raise ConfigError(f"no camera named {name}")
    typer.echo(f"camera {name} removed")


@app.command("list")
def list_(kubernetes: KubeOpt = False, config: ConfigOpt = None) -> None:
    """The cameras, with their gateway's state (sources shown without credentials)."""
    from framepipe.local.status import camera_lines, list_camera_states

    if kubernetes:
        typer.echo("CAMERA\tSOURCE\tREADY")
        for camera, source, ready in _kube(config)[2].list():
            typer.echo(f"{camera}\t{source}\t{ready}")
        return
    settings = _local_settings(config)
    _, runtime = attach_to_running(settings)
    for line in camera_lines(_local(list_camera_states(settings, runtime))):
        typer.echo(line)


@app.command("mode")
def mode(
    name: Annotated[str, typer.Argument(help="Camera name.")],
    output_mode: Annotated[
        str, typer.Argument(metavar="MODE", help="burn-in | overlay | default (back to [output] mode).")
    ],
    config: ConfigOpt = None,
) -> None:
    """Set a camera's output mode; the encoders apply it from the next GOP (no restart)."""

    validate_camera_name(name)
    chosen = None if output_mode == "default" else check_mode(output_mode)
    settings = _local_settings(config)

    async def apply() -> None:
        nc = await bus.connect(settings, "framepipe-cameras", retry_initial=False)
        try:
            await set_mode(nc.jetstream(timeout=10.0), name, chosen)
        finally:
            await nc.close()

    _local(apply())
    typer.echo(
        f"camera {name}: output mode {chosen or f'default ({settings.output.mode})'} from its next GOP"
    )
