"""The ``framepipe`` command line: Typer commands only, one module per command group."""

from framepipe.cli.app import app, entrypoint

__all__ = ["app", "entrypoint"]
