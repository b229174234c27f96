"""structlog setup: JSON lines when not a TTY, readable console otherwise.

Stages log one canonical event per unit of work (``gop.done``) with the
camera, gop, stage and duration bound, plus warnings for retries and dead
letters. Everything goes to stderr so stdout stays free for CLI output.
Every line of a local run carries its ``run`` id (``FRAMEPIPE_RUN_ID``, set by the
supervisor for itself and its children), so the logs of two runs can be told apart.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import structlog


class StderrLogger:
    """Writes each line to whatever ``sys.stderr`` is *now*.

    structlog's PrintLogger keeps the stream it was created with; a CLI invoked
    in-process (tests, notebooks) can swap stderr and close it afterwards.
    """

    def msg(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    log = debug = info = warning = warn = error = err = critical = exception = fatal = msg


def _stderr_logger(*args: object) -> StderrLogger:
    return StderrLogger()


class FileLineLogger:
    """Appends each line to a file (the local supervisor's log: its console stays for people)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def msg(self, message: str) -> None:
        with open(self.path, "a") as out:
            out.write(message + "\n")

    log = debug = info = warning = warn = error = err = critical = exception = fatal = msg


#: the environment variable holding the id of the local run a process belongs to.
RUN_ID_ENV = "FRAMEPIPE_RUN_ID"


def add_run_id(logger: Any, method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: ``run`` = ``$FRAMEPIPE_RUN_ID`` when set (read per line: the
    supervisor sets it after logging was configured)."""
    run_id = os.environ.get(RUN_ID_ENV)
    if run_id:
        event.setdefault("run", run_id)
    return event


#: a process caches each module's logger on first use (speed). The test suite turns this off:
#: it configures logging many times in one process, and a logger cached under an earlier
#: configuration keeps processors that ``structlog.testing.capture_logs`` cannot see.
CACHE_LOGGERS = True


def configure(level: str | None = None, *, json: bool | None = None, file: Path | None = None) -> None:
    """Log to stderr (JSON unless it is a terminal), or with ``file`` as JSON lines to that file."""
    level_name = (level or os.environ.get("FRAMEPIPE_LOG_LEVEL", "info")).upper()
    numeric = getattr(logging, level_name, logging.INFO)
    use_json = (not sys.stderr.isatty()) if json is None else json
    if os.environ.get("FRAMEPIPE_LOG_FORMAT") in ("json", "console"):
        use_json = os.environ["FRAMEPIPE_LOG_FORMAT"] == "json"
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
        use_json = True
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            add_run_id,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=_stderr_logger if file is None else lambda *args: FileLineLogger(file),
        cache_logger_on_first_use=CACHE_LOGGERS,
    )
