"""Message envelopes: round trips, and every malformed input rejected as a SchemaError."""

from __future__ import annotations

import contextlib

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from framepipe.core import messages
from framepipe.core.envelope import check_field_type, field_check
from framepipe.core.errors import SchemaError, UnknownVersionError
from framepipe.core.messages import (
    Detection,
    EncodeItem,
    FrameBatch,
    FrameDetections,
    GopMessage,
    Headers,
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
    headers[Headers.VERSION] = "3"
    with pytest.raises(UnknownVersionError, match="version '3'"):
        messages.decode(headers, body, GopMessage)


def test_wrong_kind_and_inconsistent_fields_are_rejected() -> None:
    """Kind mismatches and internally inconsistent tensors are schema errors."""
    headers, body = messages.encode(_gop())
    with pytest.raises(SchemaError, match="expected a 'frames'"):
        messages.decode(headers, body, FrameBatch)
    headers, body = messages.encode(_frames())
    head, tail = _split(headers, body)
    with pytest.raises(SchemaError, match="pixels"):
        messages.decode(headers, head + tail[:95], FrameBatch)


def _split(headers: dict[str, str], body: bytes) -> tuple[bytes, bytes]:
    offset = int(headers[Headers.TAIL])
    return body[:offset], body[offset:]


@pytest.mark.parametrize("message", [_frames(), SegmentMessage("cam1", 3, "mpegts", 2.0, (), b"\x47" * 188)])
def test_large_field_travels_as_a_raw_tail_and_decodes_as_a_view(message: messages.Message) -> None:
    """The TAIL field follows the msgpack map byte for byte (offset in the header), and
    the decoded field is a view of the received body, not a copy of it."""
    headers, body = messages.encode(message)
    head, tail = _split(headers, body)
    assert message.TAIL is not None
    assert tail == bytes(getattr(message, message.TAIL))
    assert message.TAIL not in msgpack.unpackb(head)
    decoded = messages.decode(headers, body, type(message))
    field = getattr(decoded, message.TAIL)
    assert isinstance(field, memoryview)
    assert field.obj is body


def test_version_1_bodies_without_a_tail_still_decode() -> None:
    """Messages written before the raw tail (version 1, everything inside msgpack) are
    still read, so a stream that holds both drains after an upgrade."""
    message = _frames()
    headers, body = messages.encode(message)
    head, tail = _split(headers, body)
    old = {**msgpack.unpackb(head), "pixels": tail}
    old_headers = {k: v for k, v in headers.items() if k != Headers.TAIL} | {Headers.VERSION: "1"}
    assert messages.decode(old_headers, msgpack.packb(old), FrameBatch) == message


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({Headers.TAIL: "x1"}, "outside"),
        ({Headers.TAIL: "-3"}, "outside"),
        ({Headers.TAIL: "\u00b2"}, "outside"),
        ({Headers.TAIL: "9" * 5000}, "outside"),
        ({Headers.TAIL: "99999"}, "outside"),
        ({Headers.TAIL: "0"}, "valid msgpack|must be a map"),
    ],
)
def test_bad_tail_offsets_are_schema_errors(change: dict[str, str], error: str) -> None:
    """A tail offset that is not a number inside the body, or that cuts the map, is a
    SchemaError (→ DLQ)."""
    headers, body = messages.encode(_frames())
    with pytest.raises(SchemaError, match=error):
        messages.decode(headers | change, body, FrameBatch)


def test_tail_on_a_kind_without_one_or_doubled_is_rejected() -> None:
    """A tail header on a kind that has no TAIL field, or a map that also carries the
    tail field, is a SchemaError."""
    headers, body = messages.encode(_gop())
    with pytest.raises(SchemaError, match="no raw tail"):
        messages.decode(headers | {Headers.TAIL: "3"}, body, GopMessage)
    headers, body = messages.encode(_frames())
    head, tail = _split(headers, body)
    doubled = msgpack.packb({**msgpack.unpackb(head), "pixels": tail})
    with pytest.raises(SchemaError, match="without 'pixels'"):
        messages.decode(headers | {Headers.TAIL: str(len(doubled))}, doubled + tail, FrameBatch)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.one_of(st.text(max_size=6), st.integers(-5, 500).map(str)))
def test_garbage_tailed_bodies_never_crash(body: bytes, offset: str) -> None:
    """Any body with any tail offset either decodes or raises SchemaError."""
    headers, _ = messages.encode(_frames())
    with contextlib.suppress(SchemaError):
        messages.decode(headers | {Headers.TAIL: offset}, body, FrameBatch)


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
    head, tail = _split(headers, body)
    raw = msgpack.unpackb(head)
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
    mutated = msgpack.packb(raw)
    with contextlib.suppress(SchemaError):
        messages.decode(headers | {Headers.TAIL: str(len(mutated))}, mutated + tail, FrameBatch)


def _decode_frames_with(**fields: object) -> FrameBatch:
    """A frames message whose msgpack map has ``fields`` replaced (the tail kept)."""
    headers, body = messages.encode(_frames())
    head, tail = _split(headers, body)
    raw = msgpack.unpackb(head) | fields
    packed = msgpack.packb(raw)
    return messages.decode(headers | {Headers.TAIL: str(len(packed))}, packed + tail, FrameBatch)


class TestFieldChecks:
    def test_an_element_of_the_wrong_type_names_the_field_and_the_element_s_type(self) -> None:
        """pts [0, "x"] is rejected as frames.pts holding a str."""
        with pytest.raises(SchemaError, match=r"^frames\.pts has the wrong type \(str\)$"):
            _decode_frames_with(pts=[0, "x"])

    def test_a_bool_is_not_an_int(self) -> None:
        """msgpack's true is no frame index."""
        with pytest.raises(SchemaError, match=r"frames\.frame_indices has the wrong type \(bool\)"):
            _decode_frames_with(frame_indices=[True, 91])

    def test_an_int_is_read_as_a_float(self) -> None:
        """scale 1 (an int on the wire) decodes as the float 1.0."""
        decoded = _decode_frames_with(scale=1)
        assert decoded.scale == 1.0
        assert type(decoded.scale) is float

    def test_a_fixed_tuple_needs_its_length(self) -> None:
        """source_size [640] (one of two) is rejected."""
        with pytest.raises(SchemaError, match=r"frames\.source_size has the wrong type \(list\)"):
            _decode_frames_with(source_size=[640])

    def test_a_scalar_where_a_tuple_is_expected_is_rejected(self) -> None:
        """shape 4 (not a list) is rejected."""
        with pytest.raises(SchemaError, match=r"frames\.shape has the wrong type \(int\)"):
            _decode_frames_with(shape=4)

    def test_an_optional_field_takes_none_and_its_type_only(self) -> None:
        """GopMessage.extradata: None or bytes; a str is rejected."""
        headers, body = messages.encode(_gop())
        raw = msgpack.unpackb(body)
        assert (
            messages.decode(headers, msgpack.packb(raw | {"extradata": None}), GopMessage).extradata is None
        )
        with pytest.raises(SchemaError, match=r"gop\.extradata has the wrong type \(str\)"):
            messages.decode(headers, msgpack.packb(raw | {"extradata": "x"}), GopMessage)

    def test_a_type_the_envelope_does_not_know_rejects_every_value(self) -> None:
        """dict[str, int] has no check: a field of that type can never decode by accident."""
        with pytest.raises(SchemaError, match=r"k\.f has the wrong type \(dict\)"):
            check_field_type("k", "f", dict[str, int], {"a": 1})

    def test_each_type_s_check_is_built_once(self) -> None:
        """The same hint gives the same check (built at its first value, not at every one)."""
        assert field_check(tuple[int, ...]) is field_check(tuple[int, ...])
