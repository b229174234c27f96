"""Encoder stage: re-read the GOP from VIDEO, draw the detections and encode a segment.

Only burn-in work reaches it: overlay and on-demand cameras' GOPs are remuxed by the analysis
stage (stages/output_routing.py), and on-demand cameras reach the encoder only while watched
(``EncodeItem.live``). An item routed as burn-in before its camera switched to overlay is
remuxed here, so a switch leaves no hole."""

from __future__ import annotations

import asyncio
import functools
from fractions import Fraction
from typing import ClassVar

import av
from nats.js import JetStreamContext

from framepipe.core import health
from framepipe.core.messages import EncodeItem, GopMessage, SegmentMessage
from framepipe.core.runner import Done, Stage, WorkContext
from framepipe.core.settings import Settings
from framepipe.core.topology import ConsumerSpec, Names, consumer_spec
from framepipe.media.annotate import draw_detections_yuv420
from framepipe.media.codec import decode_gop, encode_segment
from framepipe.media.remux import remux_gop
from framepipe.stages.output_modes import OutputModes
from framepipe.stages.video_reads import read_gop

NVENC = "h264_nvenc"
SOFTWARE = "libx264"


@functools.cache
def nvenc_available() -> bool:
    """True when FFmpeg has h264_nvenc *and* it opens (a GPU and driver are present)."""
    try:
        ctx = av.CodecContext.create(NVENC, "w")
        if not isinstance(ctx, av.VideoCodecContext):
            return False
        ctx.width, ctx.height, ctx.pix_fmt = 256, 256, "yuv420p"
        ctx.time_base = Fraction(1, 30)
        ctx.open()
    except Exception:  # noqa: BLE001 - any failure means: not usable here
        return False
    return True


def pick_codec(setting: str) -> str:
    """``auto``: NVENC when usable, libx264 otherwise; any other value is used as is."""
    if setting != "auto":
        return setting
    return NVENC if nvenc_available() else SOFTWARE


class Encoder(Stage[EncodeItem]):
    name: ClassVar[str] = Names.ENCODER
    consumer: ClassVar[ConsumerSpec] = consumer_spec(Names.ENCODER)
    input_kind = EncodeItem

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        #: the FFmpeg encoder, chosen once in setup() ("auto" probes NVENC, which takes a while).
        self.codec = ""
        self.modes = OutputModes(settings)

    async def setup(self, js: JetStreamContext) -> None:
        await self.modes.setup(js)
        self.codec = await asyncio.to_thread(pick_codec, self.settings.encoder.codec)
        health.set_backend(self.name, self.codec)

    def _annotate_and_encode(self, gop: GopMessage, item: EncodeItem) -> tuple[bytes, float, int]:
        cfg = self.settings.encoder
        by_frame = {f.frame: f.detections for f in item.frames}
        annotated: list[av.VideoFrame] = []
        for offset, frame in enumerate(decode_gop(gop, cfg.threads)):
            detections = by_frame.get(gop.frame_offset + offset, ())
            # Painted into the decoded YUV planes: no RGB round trip per frame.
            annotated.append(draw_detections_yuv420(frame, detections) if detections else frame)
        data, duration = encode_segment(
            annotated,
            Fraction(*gop.time_base),
            codec=self.codec or pick_codec(cfg.codec),
            preset=cfg.preset,
            crf=cfg.crf,
            threads=cfg.threads,
            tune=cfg.tune,
            output_height=cfg.output_height,
        )
        return data, duration, len(annotated)

    async def process(self, message: EncodeItem, ctx: WorkContext) -> Done:
        gop = await read_gop(ctx.js, message)
        # A live item is an on-demand camera's watched GOP: burn it in whatever the mode says
        # now. An on-demand camera's other items were routed before a switch to on-demand:
        # burn them in as its recording, so the switch leaves no hole.
        on_demand = message.live or bool(message.clip)  # burnt in for a viewer or an event clip
        mode = "burn-in" if on_demand else await self.modes.mode(message.camera)
        if mode == "overlay":
            data, duration = await self.offload(remux_gop, gop)
            count = len(gop.packets)
        else:
            data, duration, count = await self.offload(self._annotate_and_encode, gop, message)
        segment = SegmentMessage(
            camera=message.camera,
            gop=message.gop,
            container="mpegts",
            duration_s=duration,
            frames=message.frames,
            data=data,
            discontinuity=gop.discontinuity,
            mode="overlay" if mode == "overlay" else "burn-in",
            time_base=gop.time_base,
            # the analysis stage's tracklets, for the sink's tracks and events (a live segment is
            # never recorded: the recording segment of the same GOP carries them).
            faces=() if on_demand else message.faces,
            rendition="live" if message.live else "clip" if message.clip else "",
            clip=message.clip,
            video_seq=message.video_seq,
        )
        # A clip's GOP is the same GOP as the live or recorded one: its own message id.
        stage = f"{self.name}-clip-{message.clip}" if message.clip else self.name
        await ctx.publish(
            Names.subject(Names.OUTPUT, message.camera),
            segment,
            Names.msg_id(message.camera, message.gop, stage),
        )
        return Done(
            frames=count, fields={"segment_bytes": len(data), "mode": mode, "live": int(message.live)}
        )
