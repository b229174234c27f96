"""`framepipe --version`."""

from __future__ import annotations

from typer.testing import CliRunner

from framepipe import __version__
from framepipe.cli.app import app


class TestVersion:
    def test_version_prints_one_line_and_exits_0(self) -> None:
        """`framepipe --version` prints `framepipe <version>` and nothing else (it was "No such option")."""
        result = CliRunner().invoke(app, ["--version"])
        assert result.exit_code == 0
        assert result.output.strip() == f"framepipe {__version__}"
