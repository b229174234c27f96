"""One local system per state folder: an exclusive lock on ``<state_dir>/lock``.

Two ``framepipe run`` in one folder would share (and the second would delete) the
first's JetStream store and append to the same logs. The lock is an ``flock``, so the
kernel releases it when its holder dies however it dies (no stale lock after
``kill -9``); the file's one line names the holder for the refusal message.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import time
from pathlib import Path
from typing import IO

from framepipe.core.errors import SetupError

LOCK_FILE = "lock"


class StateLock:
    """The lock on one state folder, held from :meth:`acquire` until :meth:`release`."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / LOCK_FILE
        self._file: IO[str] | None = None

    @property
    def held(self) -> bool:
        return self._file is not None

    def acquire(self) -> None:
        """Take the lock, or raise SetupError naming the system that holds it."""
        if self._file is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")  # noqa: SIM115 (held open as long as the lock)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.readline().strip() or "another process"
            handle.close()
            raise SetupError(
                f"{self.path.parent} is in use by a running framepipe system ({holder}): stop it, "
                "or give this one its own folder (FRAMEPIPE_LOCAL__STATE_DIR)"
            ) from None
        handle.seek(0)
        handle.truncate()
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        command = " ".join(["framepipe", *sys.argv[1:]])[:200]
        handle.write(f"pid {os.getpid()} since {started}: {command}\n")
        handle.flush()
        self._file = handle

    def release(self) -> None:
        if self._file is None:
            return
        with contextlib.suppress(OSError):
            self._file.truncate(0)
        self._file.close()  # closing the descriptor releases the flock
        self._file = None
