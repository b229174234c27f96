"""`--help` reads as a user expects: flags without a type, defaults and arguments explained."""

from __future__ import annotations

import os
import subprocess
import sys


def _help(*command: str) -> str:
    """``framepipe COMMAND --help`` from a real process, wide enough that no line wraps."""
    env = {**os.environ, "COLUMNS": "200", "TERM": "dumb", "NO_COLOR": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "framepipe", *command, "--help"],
        env=env, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return result.stdout


def _row(text: str, option: str) -> str:
    (row,) = [line for line in text.splitlines() if f" {option} " in line]
    return row


class TestHelp:
    """The help of `run` and `dlq show`."""

    def test_run_help(self) -> None:
        """Flags show no `<bool>`; options keep their type; counts named alike, each with its default."""
        text = _help("run")
        assert "<bool>" not in text
        assert "<int>" in _row(text, "--decoders")
        assert "--inferencers" in text
        assert " --inference " not in text  # the old name still works, hidden
        for option, setting in (
            ("--decoders", "decoder"),
            ("--inferencers", "inference"),
            ("--encoders", "encoder"),
        ):
            assert f"default: {setting}.replicas" in _row(text, option)
        assert "default: the sink.output_dir setting" in _row(text, "--output")

    def test_dlq_show_explains_its_argument(self) -> None:
        """`dlq show SEQ`: the argument says where the sequence number comes from."""
        assert "`seq` column of `dlq list`" in _help("dlq", "show")
