"""SIGTERM and SIGHUP stop the local system the way Ctrl-C does.

systemd, ``timeout``, ``docker stop`` and Kubernetes send SIGTERM; closing the terminal
sends SIGHUP. Python's default for both is to die on the spot, which skips the ordered
shutdown (sources, then a drain of the stages, then NATS). Inside :func:`stop_on_signals`
they raise :class:`KeyboardInterrupt` in the main thread instead, so one code path
handles all three. Signals that arrive while that shutdown runs are ignored: the drain
is bounded by ``local.shutdown_grace_s`` already.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

#: the signals that mean "stop in order" besides SIGINT.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """While inside, SIGTERM/SIGHUP raise KeyboardInterrupt once; the old handlers come back after."""
    received: list[int] = []

    def interrupt(signum: int, frame: FrameType | None) -> None:
        if received:
            return
        received.append(signum)
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, interrupt) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
