"""``framepipe export``: cut a recording of one camera into an MP4, from the OUTPUT stream
while a system runs, else (or when the stream no longer has that time) from the
recording the sink kept on disk (:mod:`framepipe.web.recording`).

Segments are selected by the time JetStream stored them (when the encoder
published them; on disk: when the sink appended them), ordered by GOP sequence,
de-duplicated, and remuxed without re-encoding (they share one timeline: the encoder
keeps the source pts), or with ``--burn-in`` re-encoded with the boxes drawn in
(overlay-mode recordings).
"""

from __future__ import annotations

import asyncio
import io
import os
import re
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import av
import av.error
from nats.js import api as js_api

from framepipe.core import bus, messages
from framepipe.core.errors import ConfigError, FramepipeError
from framepipe.core.settings import Settings
from framepipe.core.topology import Names, validate_camera_name
from framepipe.web.burn_in import burn_in as burn_in_segments
from framepipe.web.recording import segments_on_disk

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
    #: where the segments came from: the OUTPUT stream or the recording's folder.
    source: str = ""


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
                    # an on-demand camera's burn-in for viewers, or an event clip's: not the recording
                    if seg.rendition not in ("live", "clip"):
                        found.setdefault(seg.gop, seg)
                if msg.metadata.num_pending == 0 or stored > until:
                    break
        finally:
            await sub.unsubscribe()
    finally:
        await nc.close()
    return found


def segment_format(segment: bytes) -> str:
    """``codec WxH`` of one MPEG-TS segment (what one MP4 track must keep throughout)."""
    try:
        with av.open(io.BytesIO(segment), "r", format="mpegts") as source:
            ctx = source.streams.video[0].codec_context
            return f"{ctx.name} {ctx.width}x{ctx.height}"
    except (av.error.FFmpegError, IndexError):
        return "unreadable"


def check_one_format(gops: list[int], segments: list[bytes]) -> None:
    """ConfigError at the first GOP whose format differs: the camera's source changed there."""
    first = segment_format(segments[0])
    for gop, segment in zip(gops[1:], segments[1:], strict=True):
        if (other := segment_format(segment)) != first:
            raise ConfigError(
                f"the recording changes format at GOP {gop} ({first} → {other}; the camera's source "
                "changed): one MP4 holds one format, so export the time before or after it (--since/--until)"
            )


def remux(segments: list[bytes], out: Path) -> float:
    """Concatenated MPEG-TS segments → MP4 (stream copy); returns the duration in seconds.

    Written to a hidden temporary name beside ``out`` and renamed when complete, so a
    failure leaves no half-written file (and an existing ``out`` is kept until then).
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial")
    try:
        duration = _remux_to(segments, partial)
        os.replace(partial, out)
    except (av.error.FFmpegError, OSError) as exc:
        raise FramepipeError(f"cannot write {out}: {exc}") from None
    finally:
        partial.unlink(missing_ok=True)
    return duration


def _remux_to(segments: list[bytes], out: Path) -> float:
    # Segment by segment: each MPEG-TS segment is self-contained, and demuxing them joined
    # would let the first segments borrow the later ones' B-frame delay (dts guessed wrong).
    first: int | None = None
    last: int | None = None
    last_dts: int | None = None
    time_base = None
    with av.open(str(out), "w", format="mp4") as target:
        stream = None
        for segment in segments:
            with av.open(io.BytesIO(segment), "r", format="mpegts") as source:
                video = source.streams.video[0]
                if stream is None:
                    stream, time_base = target.add_stream_from_template(video), video.time_base
                # A segment whose dts starts at or before the previous one's last dts (an
                # encoder's B-frame delay, or the camera's own GOP after a burn-in segment at
                # a mode switch) moves later as a whole by the overlap, so dts stays
                # increasing and ≤ pts for every frame: a frame or two per overlap.
                shift: int | None = None
                for packet in source.demux(video):
                    if packet.dts is None or packet.pts is None:
                        continue
                    if shift is None:
                        shift = 0 if last_dts is None or packet.dts > last_dts else last_dts + 1 - packet.dts
                    packet.pts += shift
                    packet.dts += shift
                    last_dts = packet.dts
                    first = packet.pts if first is None else min(first, packet.pts)
                    last = packet.pts if last is None else max(last, packet.pts)
                    packet.stream = stream
                    target.mux(packet)
    if first is None or last is None or time_base is None:
        return 0.0
    return float((last - first) * time_base)


def export(
    settings: Settings,
    camera: str,
    since: float,
    until: float,
    out: Path,
    burn_in: bool = False,
    *,
    stream: bool = True,
    output_dir: Path | None = None,
) -> Exported:
    """The recording as an MP4: a stream copy, or with ``burn_in`` an annotated re-encode
    (boxes drawn into overlay segments; see :mod:`framepipe.web.burn_in`).

    ``stream``: a system runs, so read its OUTPUT stream first; the recording on disk
    (``output_dir``, default ``sink.output_dir``) is read when it has nothing in the range."""
    validate_camera_name(camera)
    if until < since:
        raise ConfigError("--until is before --since")
    found: dict[int, messages.SegmentMessage] = {}
    source = f"the OUTPUT stream at {settings.nats.url}"
    if stream:
        found = asyncio.run(collect_segments(settings, camera, since, until))
    if not found:
        camera_dir = Path(output_dir or settings.sink.output_dir) / camera
        found = segments_on_disk(camera_dir, camera, since, until, settings.nats.url if stream else "")
        source = f"the recording in {camera_dir}"
    gops = sorted(found)
    segments = [found[g] for g in gops]
    check_one_format(gops, [bytes(segment.data) for segment in segments])
    if burn_in:
        duration = burn_in_segments(segments, out, settings.encoder)
    else:
        duration = remux([bytes(segment.data) for segment in segments], out)
    return Exported(out, len(gops), gops[0], gops[-1], duration, source)
