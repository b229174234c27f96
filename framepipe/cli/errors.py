"""The command line's one error boundary: a framepipe error is one line and an exit code.

Every command group builds its Typer app with :class:`Typer`, whose commands run
inside :func:`guarded`: a :class:`~framepipe.core.errors.FramepipeError` prints
``error: <what happened and what to do>`` on stderr and exits with the error's
``exit_code`` (2 for a bad setting or argument, 1 otherwise). Nothing else in
``cli/`` catches framepipe errors.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from framepipe.core.errors import FramepipeError

F = TypeVar("F", bound=Callable[..., Any])
console = Console(stderr=True)


def report(exc: FramepipeError) -> typer.Exit:
    """Print ``exc`` as one line and return the Exit to raise."""
    console.print(f"[bold red]error:[/] {escape(' '.join(str(exc).split()))}", soft_wrap=True)
    return typer.Exit(exc.exit_code)


def guarded(fn: F) -> F:
    """``fn`` with framepipe errors turned into one line and their exit code."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except FramepipeError as exc:
            raise report(exc) from None

    return run  # type: ignore[return-value]


class Typer(typer.Typer):
    """A Typer app whose commands all run inside :func:`guarded`."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("pretty_exceptions_enable", False)
        super().__init__(**kwargs)

    def command(self, *args: Any, **kwargs: Any) -> Callable[[F], F]:
        register = super().command(*args, **kwargs)

        def decorator(fn: F) -> F:
            register(guarded(fn))
            return fn

        return decorator


def run_app(app: typer.Typer) -> None:
    """Run a console-script app; an error raised outside any command ends the same way."""
    try:
        app()
    except FramepipeError as exc:
        sys.exit(report(exc).exit_code)
