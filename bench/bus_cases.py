"""Bus bench cases: each message kind at the sizes it really has, as real envelopes
(``messages.encode``), with the stream and durable consumer it travels on. Used by :mod:`bench.bus`."""

from __future__ import annotations

import os
from dataclasses import dataclass

from framepipe.core import messages
from framepipe.core.messages import (
    Detection,
    DetectionsMessage,
    EncodeItem,
    FrameBatch,
    FrameDetections,
    GopMessage,
    SegmentMessage,
)
from framepipe.core.topology import Names

BENCH_CONSUMER = "bench"
QUICK_CASES = "gop 150KiB,frames 32×192²,encode 30,segment 300KiB"


@dataclass(frozen=True)
class Case:
    name: str
    stream: str
    durable: str
    message: messages.Message

    @property
    def encoded(self) -> tuple[dict[str, str], bytes]:
        return messages.encode(self.message)


def _gop(camera: str, kib: int, frames: int = 30) -> GopMessage:
    size = kib * 1024 // frames
    return GopMessage(
        camera=camera,
        gop=0,
        codec="h264",
        width=1280,
        height=720,
        time_base=(1, 15360),
        frame_offset=0,
        pts=tuple(range(frames)),
        dts=tuple(range(frames)),
        keyframes=(True,) + (False,) * (frames - 1),
        packets=tuple(os.urandom(size) for _ in range(frames)),
    )


def _dets(frames: int = 30) -> tuple[FrameDetections, ...]:
    return tuple(
        FrameDetections(i, i * 512, (Detection((10.0, 20.0, 110.0, 140.0), 0.93),)) for i in range(frames)
    )


def _frames(camera: str, count: int, size: int = 192) -> FrameBatch:
    return FrameBatch(
        camera=camera,
        gop=0,
        part=0,
        parts=1,
        video_seq=1,
        frame_indices=tuple(range(count)),
        pts=tuple(range(count)),
        source_size=(1280, 720),
        scale=0.15,
        pad=(0, 42),
        shape=(count, size, size, 3),
        pixels=os.urandom(count * size * size * 3),
        gop_frames=count,
    )


def cases() -> list[Case]:
    """Each kind at the sizes it really has (1 s GOPs of 720p/1080p, 192×192 frames)."""
    segment = SegmentMessage("seg", 0, "mpegts", 1.0, _dets(), os.urandom(300 * 1024))
    return [
        Case("gop 150KiB", Names.VIDEO, Names.DECODER, _gop("gop150", 150)),
        Case("gop 600KiB", Names.VIDEO, Names.DECODER, _gop("gop600", 600)),
        Case("frames 8×192²", Names.FRAMES, Names.INFERENCE, _frames("frames8", 8)),
        Case("frames 32×192²", Names.FRAMES, Names.INFERENCE, _frames("frames32", 32)),
        Case("detections 30", Names.DETECTIONS, BENCH_CONSUMER, DetectionsMessage("dets", 0, 0, 1, _dets())),
        Case("encode 30", Names.ENCODE, Names.ENCODER, EncodeItem("encode", 0, 1, _dets())),
        Case("segment 300KiB", Names.OUTPUT, Names.SINK, segment),
    ]  # fmt: skip
