"""The process commands (`stage`, `gateway`, `setup`) start without the full command line."""

from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

from framepipe.cli import PROCESS_COMMANDS, process_app
from framepipe.cli.app import app as full_app


def _framepipe(*args: str) -> subprocess.CompletedProcess[str]:
    # -X importtime lists every module the process imported, on stderr.
    return subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "framepipe", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


_LOADED = """
import sys
sys.argv = ["framepipe", *sys.argv[1:]]
from framepipe.cli import entrypoint
try:
    entrypoint()
except SystemExit:
    pass
print(" ".join(name for name, module in sys.modules.items() if module is not None))
"""


def _modules_loaded_by(*args: str) -> set[str]:
    """The modules a `framepipe` command has imported when it ends (blocked imports left out)."""
    run = subprocess.run(
        [sys.executable, "-c", _LOADED, *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert run.returncode == 0, run.stderr[-2000:]
    return set(run.stdout.splitlines()[-1].split())


class TestProcessApp:
    def test_stage_and_gateway_do_not_import_the_other_command_groups(self) -> None:
        """`framepipe stage|gateway --help` loads neither the full app, the Kubernetes group nor aiohttp."""
        for command in ("stage", "gateway"):
            loaded = _modules_loaded_by(command, "--help")
            assert "framepipe.cli.processes" in loaded
            for module in ("framepipe.cli.app", "framepipe.cli.k8s", "framepipe.cli.faces", "aiohttp"):
                assert module not in loaded, f"{command} imported {module}"

    def test_other_commands_still_go_to_the_full_app(self) -> None:
        """`framepipe --help` lists the command groups, which the process app does not have."""
        run = _framepipe("--help")
        assert run.returncode == 0
        assert "k8s" in run.stdout
        assert "cameras" in run.stdout
        assert " framepipe.cli.app\n" in run.stderr

    def test_only_the_process_commands_block_aiohttp(self) -> None:
        """`framepipe web --help` (the full app) can still import aiohttp; only the process app blocks it."""
        loaded = _modules_loaded_by("web", "--help")
        assert "framepipe.cli.app" in loaded
        assert "framepipe.cli.process_app" not in loaded

    def test_same_commands_and_options_as_the_full_app(self) -> None:
        """Each process command has the same options in both apps (one function, registered twice)."""
        runner = CliRunner()
        for command in sorted(PROCESS_COMMANDS):
            small = runner.invoke(process_app.app, [command, "--help"])
            full = runner.invoke(full_app, [command, "--help"])
            assert small.exit_code == full.exit_code == 0
            assert small.output.split("Options")[1] == full.output.split("Options")[1]

    def test_an_unknown_stage_is_one_line_and_exit_2(self) -> None:
        """The small app ends a FramepipeError as the full one does: one line, exit 2."""
        run = _framepipe("stage", "nosuch")
        assert run.returncode == 2
        lines = [line for line in run.stderr.splitlines() if not line.startswith("import time:")]
        assert lines == ["error: unknown stage 'nosuch': use decoder, inference, analysis, encoder, sink"]
