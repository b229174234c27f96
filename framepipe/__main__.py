import os
import signal
import sys

if sys.argv[1:2] == ["stage"]:
    # A replica drained while still starting (scale-down right after scale-up) holds no
    # messages yet: exit 0 instead of dying of SIGTERM. The runner takes over the signal
    # before it fetches anything. os._exit, not SystemExit: the signal can land inside an
    # import, and Python 3.11 turns an exception raised in a class body's __set_name__
    # (numpy's finfo, for one) into a RuntimeError, exit code 1.
    def _exit_before_work(signum: int, frame: object) -> None:
        os._exit(0)

    signal.signal(signal.SIGTERM, _exit_before_work)

# The supervisor starts its children with SIGTERM blocked (local.processes.child_preexec), so a
# SIGTERM sent while the interpreter was still starting waited, pending, for the handler
# above; from here on it is delivered (to the handler, or with its default action).
if hasattr(signal, "pthread_sigmask"):
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})

from framepipe.cli import entrypoint  # after the early SIGTERM handler

entrypoint()
