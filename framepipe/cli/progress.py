"""The commands' progress display, one look for all: a title, a bar, done/total and time elapsed."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


def progress_bar(on: Console, title: str = "[bold]{task.description}") -> Progress:
    """A progress display on ``on`` that clears itself when done (``transient``)."""
    return Progress(
        TextColumn(title), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=on, transient=True
    )
