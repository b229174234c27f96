"""The ``framepipe`` command line: Typer commands only, one module per command group."""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["PROCESS_COMMANDS", "app", "entrypoint"]

#: The commands :mod:`framepipe.cli.process_app` serves: what the supervisor and Deployments start.
PROCESS_COMMANDS = frozenset({"stage", "gateway", "setup"})


def entrypoint() -> None:
    """The ``framepipe`` console script: process commands through the small app, the rest the full one."""
    if sys.argv[1:2] and sys.argv[1] in PROCESS_COMMANDS:
        from framepipe.cli import process_app

        process_app.entrypoint()
    else:
        from framepipe.cli import app as full

        full.entrypoint()


def __getattr__(name: str) -> Any:
    # ``from framepipe.cli import app`` still gives the full Typer app, imported only when asked.
    if name == "app":
        from framepipe.cli.app import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
