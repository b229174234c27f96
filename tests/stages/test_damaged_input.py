"""A damaged input (garbage in the middle of an MPEG-TS): lost frames are counted, logged and
marked, instead of vanishing with exit 0."""

from __future__ import annotations

import asyncio
import random
import threading
from itertools import pairwise
from pathlib import Path
from typing import Any

from structlog.testing import capture_logs

from framepipe.core.settings import GatewaySettings
from framepipe.core.sources import SourceState
from framepipe.media.gop import Gop
from framepipe.media.loss import FrameLossDetector
from framepipe.media.sample import ClipSpec, make_clip
from framepipe.stages.gateway.reader import END_OF_SOURCE, SourceReader
from tests.helpers import MEDIA

#: 10 s at 30 fps, one IDR a second: 300 frames, 3000 ticks (90 kHz) per frame.
SPEC = ClipSpec(width=320, height=240, seconds=10.0, gop=30, bframes=0)
FRAMES, STEP = 300, 3000


def damaged_ts(tmp_path: Path) -> Path:
    """The clip with garbage over a sixth of it, mid-file (the newcomer pass uses it too)."""
    clean = MEDIA / "damage_base.ts"
    if not clean.is_file():
        make_clip(clean, SPEC)
    data = bytearray(clean.read_bytes())
    start, size = len(data) * 2 // 5, len(data) // 6  # garbage over a sixth of it, mid-file
    data[start : start + size] = random.Random(7).randbytes(size)
    path = tmp_path / "damaged.ts"
    path.write_bytes(bytes(data))
    return path


def _read(path: Path) -> tuple[list[Gop], SourceReader]:
    async def read() -> tuple[list[Gop], SourceReader]:
        queue: asyncio.Queue[Any] = asyncio.Queue()
        reader = SourceReader("cam", str(path), GatewaySettings(), threading.Event())
        thread = threading.Thread(
            target=reader.run, args=(asyncio.get_running_loop(), queue, SourceState("cam", str(path)))
        )
        thread.start()
        gops = []
        while (item := await queue.get()) is not END_OF_SOURCE:
            if isinstance(item, Gop):
                gops.append(item)
        await asyncio.to_thread(thread.join)
        return gops, reader

    return asyncio.run(read())


class TestDamagedInput:
    def test_lost_frames_are_counted_logged_and_marked(self, tmp_path: Path) -> None:
        """Frames the demuxer skipped: counted on the reader, one `gateway.frames_lost` line per
        hole, the GOP after the hole marked a discontinuity, and no GOP spans the hole (its
        segment would claim seconds it has no frames for)."""
        with capture_logs() as logs:
            gops, reader = _read(damaged_ts(tmp_path))
        kept = sum(len(g.packets) for g in gops)
        assert kept < FRAMES  # the damage did lose frames
        holes = [e for e in logs if e["event"] == "gateway.frames_lost"]
        assert holes, "no log line for the lost frames"
        assert reader.lost_frames == sum(int(e["frames"]) for e in holes) > 0
        assert kept + reader.lost_frames <= FRAMES
        after = [g for g in gops if g.discontinuity]
        assert after, "the GOP after the hole is not marked"
        assert after[0].index == holes[0]["gop"]
        for gop in gops:
            dts = [p.dts for p in gop.packets]
            assert all(b - a < 2 * STEP for a, b in pairwise(dts)), f"GOP {gop.index} spans a hole"

    def test_clean_input_loses_nothing(self) -> None:
        """The undamaged clip: every frame kept, nothing logged as lost, no discontinuity."""
        clean = MEDIA / "damage_base.ts"
        if not clean.is_file():
            make_clip(clean, SPEC)
        with capture_logs() as logs:
            gops, reader = _read(clean)
        assert sum(len(g.packets) for g in gops) == FRAMES
        assert reader.lost_frames == 0
        assert not [e for e in logs if e["event"] == "gateway.frames_lost"]
        assert not any(g.discontinuity for g in gops)


class TestFrameLossDetector:
    def test_counts_the_frames_in_a_hole(self) -> None:
        """Steady 3000-tick steps, then a 10-frame step: 9 frames lost; jitter is no hole."""
        detector = FrameLossDetector()
        stamps = [i * 3000 for i in range(20)] + [19 * 3000 + 30_000] + [19 * 3000 + 30_000 + 3500]
        assert [detector.push(t) for t in stamps][-2:] == [9, 0]
        assert detector.lost == 9

    def test_restart_forgets_the_last_timestamp(self) -> None:
        """After a restart (reconnect, rebased jump) the first step is not a hole."""
        detector = FrameLossDetector()
        for i in range(10):
            detector.push(i * 3000)
        detector.restart()
        assert detector.push(900_000) == 0
