"""Sink: OUTPUT segments → ``<output>/<camera>/index.m3u8``, segments, detections.jsonl,
events.jsonl, and each segment's detections per frame beside it (``seg_<gop>.json``, what
the console draws over overlay-mode video).

Segments arrive in any order (several encoders). Each one is written to disk
under its GOP number and acked at once; the playlist and ``detections.jsonl``
then advance over the contiguous prefix, so per-camera order is restored here
and nowhere else. A GOP that was dead-lettered upstream (seen on the DLQ) is a
gap: the playlist continues after it with ``#EXT-X-DISCONTINUITY``. All state
is in files, so a restarted sink resumes where it left off.

Because it sees each camera in order, the sink also follows the faces' tracks across
GOPs and emits the EVENTS (:mod:`framepipe.stages.tracking`): appended to events.jsonl
and kept in ``progress.json``'s outbox until ``events.<camera>`` acked them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import structlog
from nats.js import JetStreamContext

from framepipe.core.dlq import export_dlq_metrics
from framepipe.core.messages import Headers, Message, SegmentMessage
from framepipe.core.runner import Done, Stage, WorkContext
from framepipe.core.settings import Settings
from framepipe.core.sources import SourceStates
from framepipe.core.topology import (
    CAMERA_NAME,
    STAGES,
    ConsumerSpec,
    Names,
    consumer_spec,
    validate_camera_name,
)
from framepipe.stages import retention
from framepipe.stages.camera_metrics import export_source_states
from framepipe.stages.camera_output import PLAYLIST, STATE_DIR, CameraOutput
from framepipe.stages.event_clips import EventClips
from framepipe.stages.tracking import publish_events

log = structlog.get_logger("framepipe.sink")

#: the watch leaves a camera that had a segment this recently to that segment's own check.
RECENT_SEGMENT_S = 1.0


class OutputWriter:
    """Shared by the segment and gap consumers of one sink process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.analysis = settings.analysis
        self.root = Path(settings.sink.output_dir)
        self.window = settings.sink.playlist_window
        self.retention = retention.RetentionPolicy.from_settings(settings.sink)
        self.cameras: dict[str, CameraOutput] = {}
        self.js: JetStreamContext | None = None
        self.sources: SourceStates | None = None
        self._watch: asyncio.Task[None] | None = None
        #: one camera's files and progress change under it only (segments, gaps, the watch).
        self.lock = asyncio.Lock()

    async def start(self, js: JetStreamContext) -> None:
        if self.js is None:
            self.js = js
            self.sources = SourceStates(js)
            # Events saved but not yet acked by a sink that died: the watch flushes them even
            # if no segment of that camera ever comes again.
            for progress in sorted(self.root.glob(f"*/{STATE_DIR}/progress.json")):
                with contextlib.suppress(ValueError, OSError):
                    # Retention also prunes the recordings of cameras not running now.
                    if self.retention.enabled or json.loads(progress.read_text()).get("outbox"):
                        await self.camera(progress.parent.parent.name)
            self._watch = asyncio.create_task(self._watch_sources())

    async def stop(self) -> None:
        if self._watch:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch

    async def camera(self, name: str) -> CameraOutput:
        if name not in self.cameras:
            validate_camera_name(name)
            state = await self.sources.read(name) if self.sources else None
            first = state.first_gop if state else 0
            self.cameras[name] = CameraOutput(
                self.root, name, first, self.window, self.analysis, self.settings, self.retention
            )
        return self.cameras[name]

    async def apply_retention(self, output: CameraOutput) -> None:
        """One pruning pass over the camera's recording; one log line when it removed any."""
        if self.retention.enabled:
            try:
                pruned = await asyncio.to_thread(output.prune)
            except OSError as exc:  # the segment that was just appended is not at fault
                log.warning("recording.prune_failed", camera=output.camera, error=str(exc))
                return
            if pruned is not None:
                log.info("recording.pruned", camera=output.camera, **pruned.log_fields())

    async def flush_events(self, output: CameraOutput) -> None:
        """Publish the outbox (de-duplicated by event id), then forget it."""
        if output.progress.outbox and self.js is not None:
            await publish_events(self.js, output.camera, output.progress.outbox)
            output.progress.outbox = []
            await asyncio.to_thread(output._save)

    async def check_complete(self, output: CameraOutput) -> None:
        await self.flush_events(output)
        if output.progress.ended or self.sources is None:
            return
        state = await self.sources.read(output.camera)
        if state is not None and output.finish_if_complete(state.state, state.next_gop, state.lost_frames):
            await self.flush_events(output)
            p = output.progress
            log.info(
                "camera.complete",
                camera=output.camera,
                segments=len(p.entries),
                gaps=[g["gop"] for g in p.gaps],
                playlist=str(output.dir / PLAYLIST),
            )

    async def _watch_sources(self) -> None:
        ticks = 0
        while True:
            await asyncio.sleep(0.5)
            ticks += 1
            if ticks % 10 == 1 and self.js is not None:  # every 5 s: the per-camera gauges
                with contextlib.suppress(Exception):
                    await export_source_states(self.js)
            now = time.monotonic()
            for output in list(self.cameras.values()):
                with contextlib.suppress(Exception):
                    async with self.lock:
                        # A camera whose segments keep coming is checked at each of them.
                        if now - output.last_segment_at >= RECENT_SEGMENT_S:
                            await self.check_complete(output)
                        if ticks % 10 == 1:  # age retention of cameras that get no segment
                            await self.apply_retention(output)


class Sink(Stage[SegmentMessage]):
    name: ClassVar[str] = Names.SINK
    consumer: ClassVar[ConsumerSpec] = consumer_spec(Names.SINK)
    input_kind = SegmentMessage
    #: segments of one camera are appended to its playlist in order, one at a time.
    max_in_flight: ClassVar[int | None] = 1

    def __init__(self, settings: Settings, writer: OutputWriter) -> None:
        super().__init__(settings)
        self.writer = writer
        self.clips = EventClips(settings)

    async def setup(self, js: JetStreamContext) -> None:
        await self.writer.start(js)
        await self.clips.setup(js)

    async def close(self) -> None:
        await self.writer.stop()
        await super().close()

    async def process(self, message: SegmentMessage, ctx: WorkContext) -> Done:
        if message.rendition == "live":
            # An on-demand camera's burn-in for its viewers: the recording is its overlay segment.
            return Done(frames=0, fields={"appended": 0, "skipped": "live rendition"})
        async with self.writer.lock:
            if message.rendition == "clip":
                await asyncio.to_thread(self.clips.add_segment, message)
                return Done(frames=len(message.frames), fields={"clip": message.clip})
            output = await self.writer.camera(message.camera)
            output.last_segment_at = time.monotonic()
            if message.gop >= output.progress.next_gop:
                await asyncio.to_thread(output.add_segment, message)
            appended = await asyncio.to_thread(output.advance)
            await self.writer.apply_retention(output)
            p = output.progress
            await self.clips.follow(output.camera, p.outbox, p.next_gop, output.state_dir)
            await self.writer.check_complete(output)
        return Done(frames=len(message.frames), fields={"appended": appended})


@dataclass(frozen=True)
class GapNotice(Message):
    """A dead letter seen by the sink: that GOP will not reach OUTPUT."""

    KIND: ClassVar[str] = "gap"

    stage: str = ""
    reason: str = ""


class SinkGaps(Stage[GapNotice]):
    name: ClassVar[str] = Names.SINK_GAPS
    consumer: ClassVar[ConsumerSpec] = consumer_spec(Names.SINK_GAPS)
    input_kind = GapNotice
    max_in_flight: ClassVar[int | None] = 1

    def __init__(self, settings: Settings, writer: OutputWriter) -> None:
        super().__init__(settings)
        self.writer = writer
        self._dlq_metrics: asyncio.Task[None] | None = None

    async def setup(self, js: JetStreamContext) -> None:
        await self.writer.start(js)
        # One sink per system: it exports the DLQ's size and age (framepipe_dlq_*).
        stages = tuple(spec.name for spec in STAGES if spec.dead_letters)
        self._dlq_metrics = asyncio.create_task(export_dlq_metrics(js, stages))

    async def close(self) -> None:
        if self._dlq_metrics is not None:
            self._dlq_metrics.cancel()
        await super().close()

    def parse(self, headers: Mapping[str, str], body: bytes) -> GapNotice:
        camera, gop = headers.get(Headers.CAMERA), headers.get(Headers.GOP, "")
        if camera is None or not CAMERA_NAME.match(camera) or not gop.isdigit():
            # Not tied to a GOP (e.g. garbage without headers): nothing to mark.
            # Never raise here: a dead letter of a dead letter would loop.
            return GapNotice("", -1)
        return GapNotice(
            camera, int(gop), headers.get(Headers.STAGE, "?"), headers.get(Headers.ERROR_KIND, "?")
        )

    async def process(self, message: GapNotice, ctx: WorkContext) -> Done:
        if message.gop < 0:
            return Done()  # not tied to a GOP: nothing to mark
        async with self.writer.lock:
            output = await self.writer.camera(message.camera)
            output.add_gap(message.gop, message.stage, message.reason)
            appended = output.advance()
            log.warning(
                "gop.gap", camera=message.camera, gop=message.gop, stage=message.stage, reason=message.reason
            )
            await self.writer.check_complete(output)
        return Done(fields={"appended": appended})


def sink_stages(settings: Settings) -> list[Stage[Any]]:
    """The sink process: segments and gaps of the same cameras, through one writer."""
    writer = OutputWriter(settings)
    return [Sink(settings, writer), SinkGaps(settings, writer)]
