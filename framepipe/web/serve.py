"""``framepipe web``'s process: run a :class:`~framepipe.web.server.WebServer` until a signal, or
until the local system it shows is gone."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import structlog

from framepipe.core.errors import UnreachableError
from framepipe.core.settings import Settings
from framepipe.web import events_api
from framepipe.web.pipeline_status import ReplicaCount, no_replicas
from framepipe.web.server import WebServer

log = structlog.get_logger("framepipe.web")


#: a local system whose NATS has been unreachable this long is gone (a crashed nats-server
#: is restarted by the supervisor within a few seconds).
SYSTEM_GONE_S = 15.0


def system_gone(server: WebServer, runtime_file: Path, gone_since: float | None) -> tuple[str, float | None]:
    """Why the local system this server shows is gone ("" while it is not), and since when
    NATS has been unreachable (None while connected)."""
    if server.nats_connected:
        return "", None
    gone_since = gone_since if gone_since is not None else time.monotonic()
    if not runtime_file.is_file():
        return "it was stopped", gone_since
    if time.monotonic() - gone_since >= SYSTEM_GONE_S:
        return f"its NATS has not answered for {SYSTEM_GONE_S:.0f} s", gone_since
    return "", gone_since


def serve(
    settings: Settings,
    host: str,
    port: int,
    window: int,
    replicas: ReplicaCount = no_replicas,
    describe: events_api.Describe | None = None,
    runtime_file: Path | None = None,
) -> None:
    """Run the server until SIGTERM/SIGINT (the ``framepipe web`` process).

    Serving a local system (``runtime_file`` exists, now or later), it ends once that system
    is gone: the console shows live segments from the system's NATS, so without it there is
    nothing to serve (the recordings stay on disk). UnreachableError says so in one line
    (exit 3). In a cluster (no runtime file) it rides out NATS outages instead.
    """
    import signal

    server = WebServer(
        settings, host=host, port=port, window=window, replicas=replicas, describe=describe
    ).start()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    # Printed once, to the terminal only: the token is never logged.
    print(f"console: {server.open_url}", flush=True)
    attached, gone_since, why = False, None, ""
    while not stop.wait(1.0):
        if runtime_file is None:
            continue
        attached = attached or runtime_file.is_file()
        if attached:
            why, gone_since = system_gone(server, runtime_file, gone_since)
            if why:
                break
    server.stop()
    if why:
        log.info("web.system_gone", why=why)
        raise UnreachableError(
            f"the framepipe system at {settings.nats.url} is gone ({why}): the console has nothing "
            f"left to serve; start `framepipe run` again, then `framepipe web` (recordings stay in "
            f"{settings.sink.output_dir})"
        )
