import signal
import sys

if sys.argv[1:2] == ["stage"]:
    # A replica drained while still starting (scale-down right after scale-up) holds no
    # messages yet: exit 0 instead of dying of SIGTERM. The runner takes over the signal
    # before it fetches anything.
    def _exit_before_work(signum: int, frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, _exit_before_work)

# The supervisor starts its children with SIGTERM blocked (local.processes.child_preexec), so a
# SIGTERM sent while the interpreter was still starting waited, pending, for the handler
# above; from here on it is delivered (to the handler, or with its default action).
if hasattr(signal, "pthread_sigmask"):
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})

from framepipe.cli import entrypoint  # after the early SIGTERM handler

entrypoint()
