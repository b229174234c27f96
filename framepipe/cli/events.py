"""``framepipe events tail``: who appeared, was identified, left; unknown-person alerts.

Reads the EVENTS stream of a reachable system (``--follow`` keeps waiting for new
ones), or, with no system up, the ``events.jsonl`` files the sink wrote under
``sink.output_dir``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from nats.js import api as js_api

from framepipe.cli.common import ConfigOption, attached_settings
from framepipe.cli.errors import Typer
from framepipe.cli.faces import _reachable
from framepipe.core import bus
from framepipe.core.errors import ConfigError
from framepipe.core.events import check_event
from framepipe.core.settings import Settings
from framepipe.core.topology import Names, validate_camera_name
from framepipe.stages.tracking import EVENTS_FILE

app = Typer(help="Follow the EVENTS stream (people appearing, identified, leaving).", no_args_is_help=True)
DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str) -> float:
    """``10m`` → the Unix time 10 minutes ago."""
    match = DURATION.match(text.strip())
    if not match:
        raise ConfigError(f"--since {text!r}: use a number and s, m, h or d (e.g. 10m, 2h)")
    return time.time() - float(match.group(1)) * UNITS[match.group(2)]


def event_time(event: dict[str, Any]) -> float:
    return float(event["first_seen"] if event["type"] == "person.appeared" else event["last_seen"])


def show(event: dict[str, Any], as_json: bool) -> None:
    # Plain lines, never wrapped: they are read by people and by scripts alike.
    if as_json:
        typer.echo(json.dumps(event))
        return
    when = datetime.fromtimestamp(event_time(event), UTC).strftime("%Y-%m-%d %H:%M:%S")
    distance = "" if event["distance"] is None else f" d={event['distance']:.3f}"
    typer.echo(
        f"{when}  {event['camera']}  {event['type']:<22} track {event['track']:<4} "
        f"{event['identity']}{distance}"
    )


def _from_files(settings: Settings, camera: str | None, since: float) -> list[dict[str, Any]]:
    root = Path(settings.sink.output_dir)
    paths = [root / camera / EVENTS_FILE] if camera else sorted(root.glob(f"*/{EVENTS_FILE}"))
    found = [json.loads(line) for p in paths if p.is_file() for line in p.read_text().splitlines()]
    return sorted((e for e in found if event_time(e) >= since), key=event_time)


async def _from_stream(
    settings: Settings, camera: str | None, since: float, follow: bool, as_json: bool
) -> None:
    nc = await bus.connect(settings, "framepipe-events", retry_initial=False)
    try:
        js = nc.jetstream(timeout=10.0)
        subject = Names.subject(Names.EVENTS, camera) if camera else Names.wildcard(Names.EVENTS)
        config = js_api.ConsumerConfig(
            deliver_policy=js_api.DeliverPolicy.BY_START_TIME,
            opt_start_time=datetime.fromtimestamp(since, UTC),
        )
        sub = await js.subscribe(subject, ordered_consumer=True, config=config)
        while True:
            try:
                msg = await sub.next_msg(timeout=1.0)
            except Exception:  # noqa: BLE001 - nats TimeoutError: caught up
                if follow:
                    continue
                break
            with contextlib.suppress(ValueError):
                show(check_event(json.loads(msg.data)), as_json)
    finally:
        await nc.close()


@app.command("tail")
def tail(
    camera: Annotated[str | None, typer.Option("--camera", help="Only this camera's events.")] = None,
    since: Annotated[str, typer.Option("--since", help="How far back: 30s, 10m, 2h, 1d.")] = "10m",
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep waiting for new events.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON event per line.")] = False,
    config: ConfigOption = None,
) -> None:
    """Print the events of the last --since, oldest first."""
    if camera:
        validate_camera_name(camera)
    start = parse_since(since)
    settings, _ = attached_settings(config)
    if _reachable(settings):
        asyncio.run(_from_stream(settings, camera, start, follow, as_json))
        return
    if follow:
        raise ConfigError(f"--follow needs a running system (nothing answers at {settings.nats.url})")
    for event in _from_files(settings, camera, start):
        show(event, as_json)
