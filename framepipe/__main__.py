import signal
import sys

if sys.argv[1:2] == ["stage"]:
    # A replica drained while still starting (scale-down right after scale-up) holds no
    # messages yet: exit 0 instead of dying of SIGTERM. The runner takes over the signal
    # before it fetches anything.
    def _exit_before_work(signum: int, frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, _exit_before_work)

from framepipe.pipeline.cli import entrypoint  # after the early SIGTERM handler

entrypoint()
