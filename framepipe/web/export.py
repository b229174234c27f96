"""``framepipe export``: cut a recording of one camera from the OUTPUT stream into an MP4.

Segments are selected by the time JetStream stored them (when the encoder
published them), ordered by GOP sequence, de-duplicated, and remuxed without
re-encoding (they share one timeline: the encoder keeps the source pts), or with
``--burn-in`` re-encoded with the boxes drawn in (overlay-mode recordings).
"""

from __future__ import annotations

import asyncio
import io
import re
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import av
from nats.js import api as js_api

from framepipe.core import bus, messages
from framepipe.core.errors import ConfigError
from framepipe.core.settings import Settings
from framepipe.core.topology import Names, validate_camera_name
from framepipe.web.burn_in import burn_in as burn_in_segments

RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd])$")
UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_when(text: str, now: float | None = None) -> float:
    """``now``, ``90s``/``15m``/``2h``/``1d`` (ago), epoch seconds, or ISO 8601 (local time if naive)."""
    now = time.time() if now is None else now
    text = text.strip()
    if text == "now":
        return now
    if match := RELATIVE.match(text):
        return now - float(match.group(1)) * UNITS[match.group(2)]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise ConfigError(
            f"cannot read the time {text!r}: use now, 15m (ago), epoch seconds or ISO 8601"
        ) from None


@dataclass(frozen=True)
class Exported:
    path: Path
    segments: int
    first_gop: int
    last_gop: int
    duration_s: float


async def collect_segments(
    settings: Settings, camera: str, since: float, until: float
) -> dict[int, messages.SegmentMessage]:
    nc = await bus.connect(settings, "framepipe-export", retry_initial=False)
    found: dict[int, messages.SegmentMessage] = {}
    try:
        js = nc.jetstream(timeout=10.0)
        info = await js.stream_info(Names.OUTPUT)
        if not info.state.messages:
            return found
        sub = await js.subscribe(
            Names.subject(Names.OUTPUT, camera),
            ordered_consumer=True,
            deliver_policy=js_api.DeliverPolicy.ALL,
        )
        try:
            while True:
                try:
                    msg = await sub.next_msg(timeout=2.0)
                except TimeoutError:
                    break
                stored = msg.metadata.timestamp.timestamp()
                if since <= stored <= until:
                    seg = messages.decode(msg.headers, msg.data, messages.SegmentMessage)
                    found.setdefault(seg.gop, seg)
                if msg.metadata.num_pending == 0 or stored > until:
                    break
        finally:
            await sub.unsubscribe()
    finally:
        await nc.close()
    return found


def remux(segments: list[bytes], out: Path) -> float:
    """Concatenated MPEG-TS segments → MP4 (stream copy); returns the duration in seconds."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with av.open(io.BytesIO(b"".join(segments)), "r", format="mpegts") as source:
        video = source.streams.video[0]
        with av.open(str(out), "w", format="mp4") as target:
            stream = target.add_stream_from_template(video)
            first: int | None = None
            last: int | None = None
            last_dts: int | None = None
            for packet in source.demux(video):
                if packet.dts is None or packet.pts is None:
                    continue
                # Each segment's encoder starts its dts before its first pts (B-frames), which
                # overlaps the previous segment's last dts: nudge dts forward, pts stay exact.
                if last_dts is not None and packet.dts <= last_dts:
                    packet.dts = min(last_dts + 1, packet.pts)
                last_dts = packet.dts
                first = packet.pts if first is None else min(first, packet.pts)
                last = packet.pts if last is None else max(last, packet.pts)
                packet.stream = stream
                target.mux(packet)
    if first is None or last is None or video.time_base is None:
        return 0.0
    return float((last - first) * video.time_base)


def export(
    settings: Settings, camera: str, since: float, until: float, out: Path, burn_in: bool = False
) -> Exported:
    """The recording as an MP4: a stream copy, or with ``burn_in`` an annotated re-encode
    (boxes drawn into overlay segments; see :mod:`framepipe.web.burn_in`)."""
    validate_camera_name(camera)
    if until < since:
        raise ConfigError("--until is before --since")
    found = asyncio.run(collect_segments(settings, camera, since, until))
    if not found:
        raise ConfigError(f"no segments of {camera} stored between the given times")
    gops = sorted(found)
    if burn_in:
        duration = burn_in_segments([found[g] for g in gops], out, settings.encoder)
    else:
        duration = remux([bytes(found[g].data) for g in gops], out)
    return Exported(out, len(gops), gops[0], gops[-1], duration)
