"""Message envelopes: round trips, and every malformed input rejected as a SchemaError."""

from __future__ import annotations

import contextlib

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from framepipe.pipeline import messages
from framepipe.pipeline.config import Headers
from framepipe.pipeline.errors import SchemaError, UnknownVersionError
from framepipe.pipeline.messages import (
    Detection,
    EncodeItem,
    FrameBatch,
    FrameDetections,
    GopMessage,
    SegmentMessage,
)


def _gop() -> GopMessage:
    return GopMessage(
        camera="cam1", gop=3, codec="h264", width=640, height=360, time_base=(1, 15360),
        frame_offset=90, pts=(0, 1024), dts=(-512, 0), keyframes=(True, False),
        packets=(b"\x00\x00\x01\x65abc", b"\x00\x00\x01\x41def"), extradata=b"\x01\x64",
    )  # fmt: skip


def _frames() -> FrameBatch:
    return FrameBatch(
        camera="cam1", gop=3, part=1, parts=2, video_seq=12, frame_indices=(90, 91), pts=(0, 1024),
        source_size=(640, 360), scale=0.3, pad=(0, 42), shape=(2, 4, 4, 3), pixels=bytes(96),
    )  # fmt: skip


@pytest.mark.parametrize(
    "message",
    [
        _gop(),
        _frames(),
        EncodeItem("cam1", 3, 12, (FrameDetections(90, 0, (Detection((1.0, 2.0, 3.0, 4.0), 0.9),)),)),
        SegmentMessage("cam1", 3, "mpegts", 2.0, (FrameDetections(90, 0),), b"\x47" * 188),
    ],
)
def test_round_trip(message: messages.Message) -> None:
    """encode → decode gives back an equal message, with routing headers set."""
    headers, body = messages.encode(message)
    assert headers[Headers.CAMERA] == "cam1"
    assert headers[Headers.GOP] == "3"
    assert messages.decode(headers, body, type(message)) == message


def test_unknown_version_is_its_own_error() -> None:
    """A future envelope version is rejected as UnknownVersionError (→ DLQ)."""
    headers, body = messages.encode(_gop())
    headers[Headers.VERSION] = "2"
    with pytest.raises(UnknownVersionError, match="version '2'"):
        messages.decode(headers, body, GopMessage)


def test_wrong_kind_and_inconsistent_fields_are_rejected() -> None:
    """Kind mismatches and internally inconsistent tensors are schema errors."""
    headers, body = messages.encode(_gop())
    with pytest.raises(SchemaError, match="expected a 'frames'"):
        messages.decode(headers, body, FrameBatch)
    headers, body = messages.encode(_frames())
    raw = msgpack.unpackb(body)
    raw["pixels"] = bytes(95)
    with pytest.raises(SchemaError, match="pixels"):
        messages.decode(headers, msgpack.packb(raw), FrameBatch)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_garbage_bodies_never_crash(body: bytes) -> None:
    """Any byte string either decodes or raises SchemaError — never anything else."""
    headers, _ = messages.encode(_gop())
    with contextlib.suppress(SchemaError):
        messages.decode(headers, body, GopMessage)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_bodies_never_crash(data: st.DataObject) -> None:
    """Flipping, dropping or retyping fields of a valid body is rejected cleanly."""
    headers, body = messages.encode(_frames())
    raw = msgpack.unpackb(body)
    key = data.draw(st.sampled_from(sorted(raw)))
    action = data.draw(st.sampled_from(["drop", "retype"]))
    if action == "drop":
        del raw[key]
    else:
        raw[key] = data.draw(
            st.one_of(
                st.none(),
                st.integers(-(2**63), 2**64 - 1),
                st.text(max_size=5),
                st.binary(max_size=5),
                st.lists(st.integers(-(2**31), 2**31), max_size=4),
            )
        )
    with contextlib.suppress(SchemaError):
        messages.decode(headers, msgpack.packb(raw), FrameBatch)
