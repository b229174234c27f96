"""Every log line of a local run carries the run's id."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import structlog

from framepipe.core import logs
from framepipe.core.settings import Settings
from framepipe.local.supervisor import LocalSystem


class TestRunId:
    def test_children_and_the_supervisor_log_the_run_id(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A system's children get its run id in their environment, and a JSON log line of
        this process carries it as `run` (no line had a run id before)."""
        monkeypatch.delenv(logs.RUN_ID_ENV, raising=False)
        system = LocalSystem(Settings(), tmp_path)
        other = LocalSystem(Settings(), tmp_path / "other")
        assert system.run_id != other.run_id
        assert other.child_env("decoder-0")[logs.RUN_ID_ENV] == other.run_id
        logs.configure(json=True)
        try:
            structlog.get_logger("test").info("something.happened")
        finally:
            structlog.reset_defaults()
        line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
        assert line["run"] == other.run_id


class TestInferenceThreads:
    def test_local_inference_replicas_run_one_ort_thread_unless_set(self, tmp_path: Path) -> None:
        """Auto (0) is 1 thread for a local inference replica; a set value and other stages keep theirs."""
        auto = LocalSystem(Settings(), tmp_path)
        assert auto.child_env("inference-0")["FRAMEPIPE_INFERENCE__INTRA_OP_THREADS"] == "1"
        assert auto.child_env("decoder-0").get("FRAMEPIPE_INFERENCE__INTRA_OP_THREADS") in (None, "0")
        chosen = LocalSystem(Settings().replace(inference={"intra_op_threads": 3}), tmp_path / "set")
        assert chosen.child_env("inference-1")["FRAMEPIPE_INFERENCE__INTRA_OP_THREADS"] == "3"
