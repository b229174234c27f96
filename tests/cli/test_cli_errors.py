"""The CLI's one error boundary: a framepipe error is one line on stderr and its exit code."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from framepipe.cli.errors import Typer
from framepipe.core.errors import (
    BusError,
    ConfigError,
    FramepipeError,
    SetupError,
    SourceError,
    UnreachableError,
)


def _app(error: Exception) -> Typer:
    app = Typer()

    @app.command()
    def fail() -> None:
        """Raise the error under test."""
        raise error

    @app.command()
    def ok() -> None:
        """Succeed (a second command, so Typer keeps the subcommand form)."""

    return app


class TestBoundary:
    @pytest.mark.parametrize(
        ("error", "code"),
        [
            (ConfigError("decoder.threads must be > 0, got 0"), 2),
            (SetupError("face model is missing: run `make models`"), 1),
            (BusError("NATS refused user 'decoder'"), 1),
            (UnreachableError("cannot reach NATS at nats://127.0.0.1:4222"), 3),
            (SourceError("cannot open cam.mp4"), 1),
        ],
    )
    def test_error_becomes_one_line_and_its_exit_code(self, error: FramepipeError, code: int) -> None:
        """Each framepipe error exits with its class's code and prints exactly one line."""
        result = CliRunner().invoke(_app(error), ["fail"])
        assert result.exit_code == code
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert lines == [f"error: {error}"]

    def test_long_messages_stay_on_one_line(self) -> None:
        """A message with newlines or longer than the terminal is still one line."""
        error = ConfigError("first part\nsecond part " + "x" * 300)
        result = CliRunner().invoke(_app(error), ["fail"])
        assert result.exit_code == 2
        assert len([line for line in result.output.splitlines() if line.strip()]) == 1

    def test_other_exceptions_are_not_swallowed(self) -> None:
        """A bug is not dressed up as a user error: it propagates with its traceback."""
        result = CliRunner().invoke(_app(KeyError("bug")), ["fail"])
        assert isinstance(result.exception, KeyError)

    def test_errors_also_inherit_the_builtin_they_are(self) -> None:
        """Callers may catch ValueError or OSError, as with PyAV's errors."""
        assert isinstance(ConfigError("x"), ValueError)
        assert isinstance(SourceError("x"), OSError)
        assert isinstance(BusError("x"), ConnectionError)
        assert isinstance(SetupError("x"), RuntimeError)
