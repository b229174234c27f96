"""Decoder stage: GOP → model-sized frames, split into parts under max_payload."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from framepipe.core.messages import FrameBatch, GopMessage
from framepipe.core.runner import Done, Stage, WorkContext
from framepipe.core.settings import Settings
from framepipe.core.topology import ConsumerSpec, Names, consumer_spec
from framepipe.media.codec import decode_gop
from framepipe.media.letterbox import Letterbox

# Envelope overhead (pts lists, headers) stays well below this share of a message.
PAYLOAD_SHARE = 0.85


def frames_per_part(size: int, max_payload: int, cap: int) -> int:
    per_frame = size * size * 3
    return max(1, min(cap, int(max_payload * PAYLOAD_SHARE) // per_frame))


def split(count: int, per_part: int) -> list[range]:
    """Even parts: 60 frames at ≤32 per part → 30 + 30, not 32 + 28."""
    parts = max(1, -(-count // per_part))
    base, extra = divmod(count, parts)
    ranges, start = [], 0
    for index in range(parts):
        length = base + (1 if index < extra else 0)
        ranges.append(range(start, start + length))
        start += length
    return ranges


def decode_letterboxed(gop: GopMessage, size: int, threads: int) -> tuple[np.ndarray, list[int], Letterbox]:
    """Every frame of the GOP letterboxed to ``size``² RGB, in one (n, size, size, 3) tensor,
    with its pts."""
    letterbox = Letterbox(size, gop.width, gop.height)
    decoded = list(decode_gop(gop, threads))
    tensor = np.zeros((len(decoded), size, size, 3), dtype=np.uint8)
    pts = []
    for index, frame in enumerate(decoded):
        if (frame.width, frame.height) != (letterbox.source_width, letterbox.source_height):
            letterbox = Letterbox(size, frame.width, frame.height)
        letterbox.apply(frame, out=tensor[index])
        pts.append(int(frame.pts if frame.pts is not None else 0))
    return tensor, pts, letterbox


def frame_batches(
    gop: GopMessage,
    video_seq: int,
    frames: np.ndarray,
    pts: list[int],
    letterbox: Letterbox,
    settings: Settings,
) -> list[FrameBatch]:
    """The decoded GOP as FrameBatch parts, each under ``max_payload``."""
    per_part = frames_per_part(letterbox.size, settings.nats.max_payload, settings.decoder.frames_per_part)
    parts = split(len(frames), per_part)
    batches = []
    for index, part in enumerate(parts):
        chunk = np.ascontiguousarray(frames[part.start : part.stop])
        batches.append(
            FrameBatch(
                camera=gop.camera,
                gop=gop.gop,
                part=index,
                parts=len(parts),
                video_seq=video_seq,
                frame_indices=tuple(gop.frame_offset + i for i in part),
                pts=tuple(pts[i] for i in part),
                source_size=(letterbox.source_width, letterbox.source_height),
                scale=letterbox.scale,
                pad=letterbox.pad,
                shape=(chunk.shape[0], chunk.shape[1], chunk.shape[2], chunk.shape[3]),
                # A view of the tensor: the envelope's raw tail copies it once, into the body.
                pixels=chunk.data.cast("B"),
                frame_offset=gop.frame_offset,
                gop_frames=len(frames),
                # Frame pts are in the GOP's time base: inference turns them into seconds
                # for detect_fps.
                time_base=gop.time_base,
            )
        )
    return batches


class Decoder(Stage[GopMessage]):
    name: ClassVar[str] = Names.DECODER
    consumer: ClassVar[ConsumerSpec] = consumer_spec(Names.DECODER)
    input_kind = GopMessage

    def _decode(self, gop: GopMessage) -> tuple[np.ndarray, list[int], Letterbox]:
        return decode_letterboxed(gop, self.settings.inference.input_size, self.settings.decoder.threads)

    async def process(self, message: GopMessage, ctx: WorkContext) -> Done:
        frames, pts, letterbox = await self.offload(self._decode, message)
        batches = frame_batches(message, ctx.stream_seq, frames, pts, letterbox, self.settings)
        for batch in batches:
            await ctx.publish(
                Names.subject(Names.FRAMES, message.camera),
                batch,
                Names.msg_id(message.camera, message.gop, self.name, batch.part),
            )
        return Done(frames=len(frames), fields={"parts": len(batches)})
