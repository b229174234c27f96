"""One supervised OS process: how it starts, whether it lives, how often it restarted."""

from __future__ import annotations

import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from framepipe.local.natsserver import die_with_parent


def child_preexec() -> None:
    """Pre-exec hook of framepipe child processes: :func:`die_with_parent`, and SIGTERM
    blocked until ``framepipe.__main__`` has its handler in place and unblocks it.

    Without the block, a scale-down right after a scale-up can SIGTERM a replica before
    Python has installed any handler, and it dies of the signal (-15) instead of exiting 0.
    """
    die_with_parent()
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
        with open(self.log_file, "ab") as out:
            self.process = subprocess.Popen(
                self.argv, env=env, stdout=out, stderr=subprocess.STDOUT, preexec_fn=child_preexec
            )

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None
