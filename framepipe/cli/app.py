"""The root ``framepipe`` command: every group and command, registered in one place."""

from __future__ import annotations

from typing import Annotated

import typer

from framepipe import __version__
from framepipe.cli import (
    cameras,
    dlq,
    events,
    faces,
    help_format,
    k8s,
    media,
    pipeline,
    processes,
    scale,
    thermal,
    viewing,
)
from framepipe.cli.errors import Typer, run_app
from framepipe.core import logs

help_format.install()
app = Typer(
    help="framepipe: camera streams → face detections and annotated HLS video over NATS JetStream.",
    no_args_is_help=True,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"framepipe {__version__}")
        raise typer.Exit(0)


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    logs.configure()


# inputs, then what a Deployment (or the local supervisor) runs
app.command()(media.sample)
app.command()(processes.setup)
app.command()(processes.stage)
app.command()(processes.gateway)
# the whole pipeline on this machine
app.command()(pipeline.run)
app.command()(pipeline.demo)
# looking at it
app.command()(viewing.status)
app.command()(viewing.web)
app.command()(viewing.export)
# command groups
app.add_typer(media.models_app, name="models")
app.add_typer(k8s.app, name="k8s", help="Render, check and apply the Kubernetes manifests.")
app.add_typer(cameras.app, name="cameras", help="Add, remove and list cameras while the system runs.")
app.add_typer(dlq.app, name="dlq", help="Inspect, replay and purge dead letters.")
app.add_typer(
    faces.app, name="faces", help="Enrol, list and remove the people the analysis stage recognises."
)
app.add_typer(
    events.app, name="events", help="Follow the EVENTS stream (people appearing, identified, leaving)."
)
app.add_typer(scale.app, name="scale", help="Simulate a load curve against the scaling settings; tune them.")
app.add_typer(thermal.app, name="thermal", help="Register thermal cameras to their visible ones (fever).")


def entrypoint() -> None:
    """The ``framepipe`` console script. Errors outside a command (none expected) end the same way."""
    run_app(app)
