"""``framepipe scale demand``: the running cameras' feed-forward demand, printed or served.

``--serve`` is the cluster's ``framepipe-demand`` Deployment: KEDA's metrics-api
triggers read ``GET /demand`` (scaling/demand_server.py, docs/autoscaling.md).
"""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path
from typing import Annotated

import typer

from framepipe.cli.common import attached_settings
from framepipe.core.errors import FramepipeError, UnreachableError
from framepipe.core.loader import load_cluster_config
from framepipe.scaling.demand import STALE_AFTER_S, configured_rates
from framepipe.scaling.demand_server import DemandServer

DEFAULT_THROUGHPUT = Path("bench/results/scaling.json")


def demand_command(
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="framepipe TOML config (\\[scaling.<stage>] rates).")
    ] = None,
    serve: Annotated[bool, typer.Option("--serve", help="Serve GET /demand until SIGTERM.")] = False,
    host: Annotated[str, typer.Option(help="Address to listen on with --serve.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on with --serve (0: any free one).")] = 8095,
    stale_after: Annotated[
        float, typer.Option(help="Seconds after which a running camera's unrefreshed state is not counted.")
    ] = STALE_AFTER_S,
) -> None:
    """The running cameras' GOPs/s and each stage's expected replicas (JSON), once or served."""
    settings, _ = attached_settings(config)
    scaling = load_cluster_config(config).scaling
    server = DemandServer(
        settings, scaling, configured_rates(scaling, DEFAULT_THROUGHPUT), stale_after_s=stale_after
    )
    if serve:
        asyncio.run(_serve(server, host, port))
        return
    try:
        document = asyncio.run(_once(server))
    except FramepipeError:
        raise  # already one line saying what to do (NATS unreachable, ...)
    except Exception as exc:  # noqa: BLE001 - one line at the CLI boundary
        raise UnreachableError(
            f"cannot read the cameras' source states at {settings.nats.url} ({exc}): "
            "start the system (`framepipe run`) or point nats.url at it"
        ) from None
    typer.echo(json.dumps(document, indent=2))


async def _once(server: DemandServer) -> dict[str, object]:
    try:
        return await server.document()
    finally:
        await server.close()


async def _serve(server: DemandServer, host: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await server.start(host, port)
    try:
        await stop.wait()
    finally:
        await server.close()
