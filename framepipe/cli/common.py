"""What every command module shares: the consoles, the --config option, settings."""

from __future__ import annotations

import socket
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from framepipe.core.loader import load_settings
from framepipe.core.settings import Settings
from framepipe.local.runtime import Runtime, attach_to_running


def _console(stderr: bool) -> Console:
    """A terminal gets Rich's layout; a pipe or file gets lines that are not wrapped at 80
    columns and tables that are not cut (scripts read them)."""
    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else PIPE_WIDTH
    return Console(stderr=stderr, soft_wrap=not stream.isatty(), width=width)


#: how wide tables may grow when the output is not a terminal.
PIPE_WIDTH = 400
#: progress, status lines and errors go to stderr; results (paths, tables) to stdout.
console = _console(stderr=True)
out = _console(stderr=False)

ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="TOML settings file (or FRAMEPIPE_CONFIG).")
]
DEFAULT_SAMPLE = Path(".cache/media/sample.mp4")


def attached_settings(config: Path | None) -> tuple[Settings, Runtime | None]:
    """Settings pointed at the running local system's NATS, when there is one."""
    return attach_to_running(load_settings(config))


def nats_reachable(settings: Settings) -> bool:
    """Whether anything listens at ``nats.url`` (a TCP connect; no NATS handshake)."""
    try:
        socket.create_connection(settings.nats.host_port, timeout=settings.nats.connect_timeout_s).close()
    except OSError:
        return False
    return True
