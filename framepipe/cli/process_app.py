"""The commands the supervisor and every Deployment start: ``stage``, ``gateway``, ``setup``.

A process started per camera or per replica pays for every module it imports. The full
command line (:mod:`framepipe.cli.app`) imports every command group (Kubernetes, faces,
events, scaling...), about 0.25 CPU s that a stage or a gateway never uses; with many
cameras starting at once on a small node that is what builds the first backlog.
:func:`framepipe.cli.entrypoint` sends these three commands here instead; their options,
help and errors are the same as in the full app, which registers the same functions.
"""

from __future__ import annotations

import sys

# nats-py imports aiohttp (about 0.1 CPU s, a fifth of a gateway's start) only for its
# WebSocket transport; nats.url takes nats:// and tls:// alone (core/settings/bus.py), so a
# process command never uses it. A None entry makes nats-py's guarded import fail as if
# aiohttp were not installed.
sys.modules.setdefault("aiohttp", None)  # type: ignore[arg-type]

from framepipe.cli import help_format, processes  # noqa: E402
from framepipe.cli.errors import Typer, run_app  # noqa: E402
from framepipe.core import logs  # noqa: E402

help_format.install()
app = Typer(help="framepipe's process commands (the full list: `framepipe --help`).", no_args_is_help=True)


@app.callback()
def main() -> None:
    logs.configure()


app.command()(processes.setup)
app.command()(processes.stage)
app.command()(processes.gateway)


def entrypoint() -> None:
    """Run one process command, ending a :class:`FramepipeError` as the full app does."""
    run_app(app)
