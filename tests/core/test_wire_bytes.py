"""Wire format pins: every kind's encoded headers and body stay byte-identical across refactors."""

from __future__ import annotations

import hashlib

import pytest

from framepipe.core import messages
from framepipe.core.messages import (
    AttributeReading,
    Detection,
    DetectionsMessage,
    EncodeItem,
    FaceTracklet,
    FrameBatch,
    FrameDetections,
    GapMessage,
    GopMessage,
    SegmentMessage,
)

_ATTRIBUTES = (AttributeReading("mask", "worn", 0.93), AttributeReading("temperature", 36.6, 0.5))
_DETECTION = Detection((1.0, 2.5, 30.25, 40.0), 0.91234, "face", 3, "ada", _ATTRIBUTES)
_FRAMES = (
    FrameDetections(90, 0, (_DETECTION, Detection((5.0, 6.0, 7.0, 8.0), 0.5))),
    FrameDetections(91, 1024),
)
_TRACKLET = FaceTracklet(
    local=1, first_frame=90, last_frame=91, first_box=(1.0, 2.0, 3.0, 4.0), last_box=(2.0, 3.0, 4.0, 5.0),
    first_seen=10.5, last_seen=11.0, identity="ada", distance=0.4, crops=2, embedding=b"\x01\x02\x03\x04",
    best_frame=91, best_box=(2.0, 3.0, 4.0, 5.0), snapshot=b"\xff\xd8", attributes=_ATTRIBUTES,
)  # fmt: skip

_GOP = GopMessage(
    camera="cam1", gop=3, codec="h264", width=640, height=360, time_base=(1, 15360),
    frame_offset=90, pts=(0, 1024), dts=(-512, 0), keyframes=(True, False),
    packets=(b"\x00\x00\x01\x65abc", b"\x00\x00\x01\x41def"), extradata=b"\x01\x64",
    captured_at=1.5, pixel_format="yuv420p",
)  # fmt: skip
_BATCH = FrameBatch(
    camera="cam1", gop=3, part=1, parts=2, video_seq=12, frame_indices=(90, 91), pts=(0, 1024),
    source_size=(640, 360), scale=0.3, pad=(0, 42), shape=(1, 2, 2, 3), pixels=bytes(range(12)),
    time_base=(1, 15360), selected=(True, False),
)  # fmt: skip
_SEGMENT = SegmentMessage(
    "cam1", 3, "mpegts", 2.0, _FRAMES, b"\x47" * 4, False, "overlay", (1, 90000), (_TRACKLET,), "recording"
)  # fmt: skip
_TAIL = "Framepipe-Tail"
_JSON = {"Content-Type": "application/json"}

#: (message, extra headers beyond version/kind/camera/gop, sha256 of the body, body length),
#: measured on the envelope as it was before core/messages.py was split into modules; encode
#: and segment re-pinned when event clips added EncodeItem.clip and SegmentMessage.clip/video_seq
#: (new fields with defaults, appended: older readers ignore them); frames re-pinned when
#: FrameBatch.picture was appended (13 bytes: its key and (0, 0)).
PINNED: list[tuple[messages.Message, dict[str, str], str, int]] = [
    (_GOP, {}, "0641582c66037d64541fe800b8700d31ac8fa9eaa31015fdc4754f12fa7cb534", 206),
    (_BATCH, {_TAIL: "186"}, "9c89bc814762162f8af1309b6da00fbc92bb60992d524ae4376406ee36711e7f", 198),
    (
        DetectionsMessage("cam1", 3, 0, 1, _FRAMES, "yolo"),
        _JSON,
        "6a8070f530776371650692e68e1167303d3d54b25495de0e77b39af34127db74",
        408,
    ),
    (
        EncodeItem("cam1", 3, 12, _FRAMES, (_TRACKLET,), True),
        {},
        "f05c9ee98948a9fdf7ab1507f11d95924f2853cae3b2ee188f649918e7755f2e",
        758,
    ),
    (_SEGMENT, {_TAIL: "854"}, "19da668d1a780eed712319a122f161214b1443e9fd0f7c2cc11bfeb2a6e33956", 858),
    (
        GapMessage("cam1", 4, 100.25, 3.5, "eof"),
        _JSON,
        "bb8f36205eec54b23c7aad8830a9c729c312e7e8dca6c21f0ca87d694082ccab",
        81,
    ),
]


class TestWireBytes:
    """encode() writes the same headers and body bytes as the pinned envelope."""

    @pytest.mark.parametrize(
        ("message", "extra", "digest", "length"), PINNED, ids=[p[0].KIND for p in PINNED]
    )
    def test_encoded_bytes_are_pinned(
        self, message: messages.Message, extra: dict[str, str], digest: str, length: int
    ) -> None:
        """Headers equal the pin, the body has the pinned length and sha256, and it decodes back."""
        headers, body = messages.encode(message)
        camera, gop = message.camera, str(message.gop)
        expected = {"Framepipe-Version": "2", "Framepipe-Kind": message.KIND, "Framepipe-Camera": camera,
                    "Framepipe-Gop": gop, **extra}  # fmt: skip
        assert headers == expected
        assert (len(body), hashlib.sha256(body).hexdigest()) == (length, digest)
        assert type(messages.decode(headers, body, type(message))) is type(message)

    def test_small_bodies_are_pinned_to_the_byte(self) -> None:
        """The JSON gap body and a tailed frame batch's raw tail are the exact bytes."""
        _, gap = messages.encode(GapMessage("cam1", 4, 100.25, 3.5, "eof"))
        assert gap == b'{"kind":"gap","camera":"cam1","gop":4,"since":100.25,"down_s":3.5,"reason":"eof"}'
        headers, body = messages.encode(_BATCH)
        assert body[int(headers["Framepipe-Tail"]) :] == bytes(range(12))
