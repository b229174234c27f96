"""Where a finished GOP goes, per its camera's output mode (the analysis stage's last step).

* ``burn-in``: to ENCODE; the encoder draws the boxes and re-encodes.
* ``overlay``: the camera's own GOP is remuxed here (no decode, no encode, ~0.2 CPU ms) and
  published to OUTPUT as the camera's segment, so the encoder gets no work for it and can sleep
  at zero replicas.
* ``on-demand``: remuxed here as overlay is, and published to OUTPUT as the recording
  (``rendition="recording"``). Only while someone watches the camera's annotated
  live view (a key in ``FP_VIEWERS``, :mod:`framepipe.core.viewers`) does the GOP also go to
  ENCODE with ``live=True``; the encoder burns it in as ``rendition="live"``, which the web
  server serves as ``/<camera>/live.m3u8`` and over WebRTC and the sink never records.

The mode and the viewer key are read once per GOP (two KV gets on loopback), so a mode change
or a viewer's arrival applies from the next GOP this stage finishes, on every replica.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from framepipe.core.messages import EncodeItem, GopMessage, SegmentMessage
from framepipe.core.runner import Stage, WorkContext
from framepipe.core.settings import Settings
from framepipe.core.topology import Names
from framepipe.core.viewers import is_watched, viewers_bucket
from framepipe.media.remux import remux_gop
from framepipe.stages.output_modes import OutputModes

ON_DEMAND = "on-demand"
OVERLAY = "overlay"
#: reads the GOP's packets from VIDEO (the analysis stage's read, with its checks).
GopReader = Callable[[JetStreamContext, EncodeItem], Awaitable[GopMessage]]


class OutputRouter:
    def __init__(self, settings: Settings) -> None:
        self.modes = OutputModes(settings)
        self._viewers: KeyValue | None = None

    async def setup(self, js: JetStreamContext) -> None:
        await self.modes.setup(js)
        self._viewers = await viewers_bucket(js)

    async def watched(self, camera: str) -> bool:
        return self._viewers is not None and await is_watched(self._viewers, camera)

    async def route(
        self,
        stage: Stage[EncodeItem],
        ctx: WorkContext,
        item: EncodeItem,
        gop: GopMessage | None,
        read: GopReader,
    ) -> dict[str, int | float | str]:
        """Publish ``item``'s GOP onwards; returns the fields for the stage's log line."""
        mode = await self.modes.mode(item.camera)
        encode_subject = Names.subject(Names.ENCODE, item.camera)
        msg_id = Names.msg_id(item.camera, item.gop, stage.name)
        if mode not in (ON_DEMAND, OVERLAY):
            await ctx.publish(encode_subject, item, msg_id)
            return {"mode": mode}
        watched = mode == ON_DEMAND and await self.watched(item.camera)
        if watched:
            # First, so the encoder (perhaps starting from zero replicas) hears of it soonest.
            await ctx.publish(
                encode_subject,
                EncodeItem(item.camera, item.gop, item.video_seq, item.frames, live=True),
                msg_id,
            )
        gop = gop or await read(ctx.js, item)
        data, duration = await stage.offload(remux_gop, gop)
        recording = SegmentMessage(
            camera=item.camera,
            gop=item.gop,
            container="mpegts",
            duration_s=duration,
            frames=item.frames,
            data=data,
            discontinuity=gop.discontinuity,
            mode="overlay",
            time_base=gop.time_base,
            faces=item.faces,
            # overlay's segment is its only rendition, and the annotated WebRTC view's too
            # (boxes over its data channel); on-demand's recording is not what WebRTC shows.
            rendition="recording" if mode == ON_DEMAND else "",
            video_seq=item.video_seq,
        )
        await ctx.publish(Names.subject(Names.OUTPUT, item.camera), recording, msg_id)
        return {"mode": mode, "watched": int(watched), "segment_bytes": len(data)}
