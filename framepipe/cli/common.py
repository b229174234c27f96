"""What every command module shares: the consoles, the --config option, settings."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from framepipe.core.loader import load_settings
from framepipe.core.settings import Settings
from framepipe.local.runtime import Runtime, attach_to_running

#: progress, status lines and errors go to stderr; results (paths, tables) to stdout.
console = Console(stderr=True)
out = Console()

ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="TOML settings file (or FRAMEPIPE_CONFIG).")
]
DEFAULT_SAMPLE = Path(".cache/media/sample.mp4")


def attached_settings(config: Path | None) -> tuple[Settings, Runtime | None]:
    """Settings pointed at the running local system's NATS, when there is one."""
    return attach_to_running(load_settings(config))
