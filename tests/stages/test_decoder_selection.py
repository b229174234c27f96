"""The decoder letterboxes and sends only the frames the model runs on (detect_fps /
detect_every), while every source frame stays listed for per-frame detections."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from framepipe.core import messages
from framepipe.core.errors import SchemaError
from framepipe.core.messages import FrameBatch, GopMessage
from framepipe.core.settings import ConfigError, DecoderSettings, Settings
from framepipe.media.codec import decode_gop
from framepipe.media.gop import GopCutter
from framepipe.media.letterbox import place
from framepipe.stages.decoder import Decoder, decode_letterboxed, frame_batches, part_ranges
from framepipe.stages.gateway import gop_message, iter_packets, open_input, stream_params
from tests.helpers import clip


def _gops() -> list[GopMessage]:
    """Two GOPs of real 30 fps H.264 with B-frames (30 frames each)."""
    container, stream = open_input(str(clip("h264_bframes.mp4")))
    with container:
        params = stream_params(stream)
        cutter = GopCutter(params.codec, params.extradata, params.time_base)
        return [gop_message("sel", g, params) for g in cutter.cut(iter_packets(container, stream))][:2]


def _publish(settings: Settings, gops: list[GopMessage]) -> list[FrameBatch]:
    """What the decoder stage publishes for ``gops``: its own _decode and frame_batches."""
    decoder = Decoder(settings)
    out: list[FrameBatch] = []
    for seq, gop in enumerate(gops, start=1):
        frames, pts, selected, letterbox = decoder._decode(gop)
        out += frame_batches(gop, seq, frames, pts, letterbox, settings, selected)
    return out


class TestDecoderSelection:
    def test_detect_fps_cuts_letterboxed_frames_and_bus_bytes_by_the_same_factor(
        self, settings: Settings
    ) -> None:
        """detect_fps = 5 on 30 fps: 1 frame in 6 is letterboxed and published, the pixel bytes
        fall 6×, and every source frame is still listed once, in order."""
        gops = _gops()
        every = _publish(settings, gops)
        fps5 = _publish(settings.replace(inference={"detect_fps": 5.0}), gops)
        frames = sum(len(g.packets) for g in gops)
        for batches in (every, fps5):
            listed = [i for b in batches for i in b.frame_indices]
            assert listed == list(range(frames))
        letterboxed = sum(b.shape[0] for b in fps5)
        assert sum(b.shape[0] for b in every) == frames
        assert letterboxed == frames // 6
        pixel_bytes = sum(len(b.pixels) for b in every), sum(len(b.pixels) for b in fps5)
        assert pixel_bytes[0] == 6 * pixel_bytes[1]
        body_bytes = [sum(len(messages.encode(b)[1]) for b in batches) for batches in (every, fps5)]
        assert body_bytes[0] / body_bytes[1] == pytest.approx(6.0, rel=0.01)
        chosen = [i for b in fps5 for i, s in zip(b.frame_indices, b.selected, strict=True) if s]
        assert chosen == list(range(0, frames, 6))
        assert all(not b.selected for b in every)  # every frame there: the field stays empty

    def test_detect_every_selects_by_frame_index(self, settings: Settings) -> None:
        """detect_every = 4 letterboxes frames 0, 4, 8... of the source (and each GOP's first)."""
        gops = _gops()
        batches = _publish(settings.replace(inference={"detect_every": 4}), gops)
        chosen = [i for b in batches for i, s in zip(b.frame_indices, b.selected, strict=True) if s]
        expected = sorted({i for i in range(60) if i % 4 == 0} | {30})
        assert chosen == expected
        assert sum(b.shape[0] for b in batches) == len(expected)

    def test_parts_start_on_a_selected_frame(self) -> None:
        """Parts split the selected frames evenly; each starts on a selected frame and
        together they cover every frame once."""
        selected = [i % 3 == 0 for i in range(20)]  # 7 selected
        parts = part_ranges(selected, per_part=3)
        assert [len(rows) for _, rows in parts] == [3, 2, 2]
        assert [sources.start for sources, _ in parts] == [0, 9, 15]
        assert [i for sources, _ in parts for i in sources] == list(range(20))
        assert all(selected[sources.start] for sources, _ in parts)

    def test_selected_round_trips_and_is_validated(self, settings: Settings) -> None:
        """`selected` survives the envelope; a shape that disagrees with it is a SchemaError."""
        (batch, *_) = _publish(settings.replace(inference={"detect_fps": 5.0}), _gops()[:1])
        headers, body = messages.encode(batch)
        back = messages.decode(headers, body, FrameBatch)
        assert back.selected == batch.selected
        assert back.shape == batch.shape
        n, h, w, c = batch.pixel_shape
        with pytest.raises(SchemaError, match="shape does not match"):
            FrameBatch(**{**batch.__dict__, "selected": (True,) * len(batch.frame_indices)})
        with pytest.raises(SchemaError, match="select the first"):
            FrameBatch(**{**batch.__dict__, "selected": (False, *batch.selected[1:])})
        assert np.frombuffer(back.pixels, dtype=np.uint8).size == n * h * w * c


class TestDecodeThroughLastSelected:
    def test_frames_after_the_last_selected_one_are_not_decoded(self) -> None:
        """decode_gop(through_pts) stops at that frame; its frames are the full decode's."""
        gop = _gops()[0]
        shown = sorted(gop.pts)
        full = list(decode_gop(gop))
        through = [f for f in decode_gop(gop, 1, shown[24]) if f.pts is not None and f.pts <= shown[24]]
        assert [f.pts for f in through] == shown[:25]
        assert len(list(decode_gop(gop, 1, shown[24]))) < len(full)
        for a, b in zip(through, full, strict=False):
            assert np.array_equal(a.to_ndarray(), b.to_ndarray())

    def test_selected_frames_are_the_full_decodes(self, settings: Settings) -> None:
        """detect_fps = 5: the letterboxed frames and pts equal those of decoding every frame."""
        gop = _gops()[1]
        cfg = settings.replace(inference={"detect_fps": 5.0}).inference
        choose = Decoder(settings.replace(inference={"detect_fps": 5.0}))._decode
        frames, pts, selected, letterbox = choose(gop)
        everything, all_pts, _ = decode_letterboxed(gop, cfg.input_size, 1)
        assert pts == all_pts
        assert np.array_equal(place(frames, cfg.input_size, letterbox.pad), everything[np.array(selected)])

    def test_packets_without_distinct_pts_decode_the_whole_gop(self, settings: Settings) -> None:
        """Repeated packet pts cannot be selected from before decoding: every frame is decoded."""
        gop = dataclasses.replace(_gops()[0], pts=(0,) * 30)
        frames, pts, selected, _ = Decoder(settings.replace(inference={"detect_every": 6}))._decode(gop)
        assert len(pts) == len(selected) == 30
        assert frames.shape[0] == sum(selected) == 5


class TestFramesLayout:
    """A FRAMES batch holds each frame's picture with no bars by default (``picture``)."""

    def test_picture_batches_are_the_letterboxed_ones_without_their_bars(self, settings: Settings) -> None:
        """Same parts, frames, shape and pad; pixels are the picture area only, and placed into
        the square they are the letterboxed pixels byte for byte."""
        gops, rate = _gops(), {"detect_fps": 5.0}
        pictures = _publish(settings.replace(inference=rate), gops)
        squares = _publish(settings.replace(inference=rate, decoder={"frames_layout": "letterbox"}), gops)
        assert len(pictures) == len(squares) >= 2
        size = settings.inference.input_size
        for picture, square in zip(pictures, squares, strict=True):
            n, height, width, _ = picture.pixel_shape
            assert (height, width) == picture.picture == (size * 9 // 16, size)  # the clip is 16:9
            assert (square.picture, square.pixel_shape) == ((0, 0), square.shape)
            assert picture.shape == square.shape == (n, size, size, 3)
            assert (picture.frame_indices, picture.pts, picture.selected, picture.pad) == (
                square.frame_indices,
                square.pts,
                square.selected,
                square.pad,
            )
            pixels = np.frombuffer(picture.pixels, dtype=np.uint8).reshape(picture.pixel_shape)
            placed = place(pixels, size, picture.pad)
            assert placed.tobytes() == bytes(square.pixels)
            assert len(picture.pixels) / len(square.pixels) == pytest.approx(height / size)

    def test_picture_survives_the_wire_and_older_batches_read_as_squares(self, settings: Settings) -> None:
        """``picture`` round-trips; a square batch without the field (older decoders) reads as one."""
        (batch, *_) = _publish(settings.replace(inference={"detect_fps": 5.0}), _gops()[:1])
        headers, body = messages.encode(batch)
        back = messages.decode(headers, body, FrameBatch)
        assert back.picture == batch.picture != (0, 0)
        assert bytes(back.pixels) == bytes(batch.pixels)
        (square, *_) = _publish(
            settings.replace(inference={"detect_fps": 5.0}, decoder={"frames_layout": "letterbox"}),
            _gops()[:1],
        )
        wire = square.to_wire()
        del wire["picture"]
        assert FrameBatch.from_wire(wire).picture == (0, 0)

    def test_a_reader_older_than_the_field_refuses_a_picture_batch(self, settings: Settings) -> None:
        """Without ``picture`` (what an older inference reads) the byte count disagrees with
        ``shape``: a SchemaError, so the batch is dead-lettered, never read as squares."""
        (batch, *_) = _publish(settings.replace(inference={"detect_fps": 5.0}), _gops()[:1])
        wire = batch.to_wire()
        del wire["picture"]
        with pytest.raises(SchemaError, match=r"pixels hold \d+ bytes, their shape needs"):
            FrameBatch.from_wire(wire)

    def test_a_picture_that_does_not_fit_its_input_is_refused(self, settings: Settings) -> None:
        """A pad or picture that leaves the model's square is a SchemaError (dead letter)."""
        (batch, *_) = _publish(settings.replace(inference={"detect_fps": 5.0}), _gops()[:1])
        height, width = batch.picture
        size = batch.shape[1]
        with pytest.raises(SchemaError, match="does not fit"):
            dataclasses.replace(batch, pad=(0, size - height + 1))
        with pytest.raises(SchemaError, match="does not fit"):
            dataclasses.replace(batch, picture=(width, height))
        with pytest.raises(SchemaError, match="does not fit"):
            dataclasses.replace(batch, picture=(0, width))

    def test_frames_of_another_size_than_the_gop_says_are_letterboxed(self, settings: Settings) -> None:
        """Pictures of one batch share a size: frames unlike the GOP's stated size go as squares."""
        gop = dataclasses.replace(_gops()[0], width=320, height=180)
        frames, _, _, letterbox = Decoder(settings.replace(inference={"detect_fps": 5.0}))._decode(gop)
        size = settings.inference.input_size
        assert frames.shape[1:] == (size, size, 3)
        assert (letterbox.source_width, letterbox.source_height) != (320, 180)

    def test_layout_setting_is_checked(self) -> None:
        """frames_layout is "picture" or "letterbox"; anything else says which."""
        assert DecoderSettings().frames_layout == "picture"
        with pytest.raises(ConfigError, match=r"decoder\.frames_layout must be 'picture' or 'letterbox'"):
            DecoderSettings(frames_layout="square")  # type: ignore[arg-type]
