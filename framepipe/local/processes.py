"""One supervised OS process: how it starts, whether it lives, how often it restarted."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

#: Linux prctl(2) option: the signal the kernel sends a child when its parent dies.
_PR_SET_PDEATHSIG = 1


def child_preexec(parent_pid: int) -> None:
    """Pre-exec hook of framepipe child processes: killed with the supervisor, however it
    dies, and SIGTERM blocked until ``framepipe.__main__`` has its handler in place.

    The kernel sends SIGKILL when the supervisor dies: a supervisor that was itself
    stopped in order (SIGTERM, SIGHUP, Ctrl-C) has drained its children before it exits,
    so a parent death that reaches the kernel is an unplanned one (``kill -9``, OOM). A
    SIGTERM there would start a drain that waits forever on the NATS that died with the
    parent; unacknowledged messages are redelivered on the next start instead. If the
    parent died before the prctl took effect, the child exits at once.

    Each child gets its own process group, so a terminal's Ctrl-C reaches only the
    supervisor, which then stops sources, drains stages, and stops NATS last.

    Without the SIGTERM block, a scale-down right after a scale-up can SIGTERM a replica
    before Python has installed any handler, and it dies of the signal (-15) instead of
    exiting 0.
    """
    os.setpgrp()
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent_pid:
            os._exit(1)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})


@dataclass
class Managed:
    name: str
    argv: list[str]
    log_file: Path
    restart: bool = True
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    draining: bool = False

    def spawn(self, env: dict[str, str]) -> None:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        preexec = functools.partial(child_preexec, os.getpid())
        with open(self.log_file, "ab") as out:
            self.process = subprocess.Popen(
                self.argv, env=env, stdout=out, stderr=subprocess.STDOUT, preexec_fn=preexec
            )

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None
