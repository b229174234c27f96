"""Adding a camera again: the same source is a no-op, another source is refused, and a camera
whose numbering continues (removed and added again) starts a new recording."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from framepipe.core.bus import setup_topology
from framepipe.core.errors import ConfigError
from framepipe.core.settings import GatewaySettings, Settings
from framepipe.core.sources import SourceState
from framepipe.local.cameras import CameraSpec, add_camera, list_cameras
from framepipe.media.gop import Gop
from framepipe.stages.gateway.reader import END_OF_SOURCE, SourceReader
from tests.helpers import faces_clip


def test_readding_with_another_source_is_refused(nats_settings: Settings) -> None:
    """`cameras add door A` twice is fine; then `cameras add door B` is one ConfigError, and A stays."""
    asyncio.run(setup_topology(nats_settings))
    asyncio.run(add_camera(nats_settings, CameraSpec("door", "a.mp4")))
    asyncio.run(add_camera(nats_settings, CameraSpec("door", "a.mp4", "fast")))
    with pytest.raises(ConfigError, match=r"camera door already exists with source a\.mp4: remove it first"):
        asyncio.run(add_camera(nats_settings, CameraSpec("door", "b.mp4")))
    assert asyncio.run(list_cameras(nats_settings)) == [CameraSpec("door", "a.mp4", "fast")]


def _gops(start: SourceState) -> list[Gop]:
    """Every GOP the gateway's reader cuts from the faces clip, starting at ``start``."""

    async def read() -> list[Gop]:
        queue: asyncio.Queue[Any] = asyncio.Queue()
        reader = SourceReader("door", str(faces_clip()), GatewaySettings(), threading.Event())
        thread = threading.Thread(target=reader.run, args=(asyncio.get_running_loop(), queue, start))
        thread.start()
        gops = []
        while (item := await queue.get()) is not END_OF_SOURCE:
            if isinstance(item, Gop):
                gops.append(item)
        await asyncio.to_thread(thread.join)  # the loop must run to finish the reader's last put
        return gops

    return asyncio.run(read())


class TestNewRecording:
    def test_a_continued_camera_starts_with_a_discontinuity(self) -> None:
        """A gateway that continues a camera's numbering (GOP 40 on) marks its first GOP a
        discontinuity, so the playlist gets #EXT-X-DISCONTINUITY between the two sources."""
        gops = _gops(SourceState("door", "b.mp4", next_gop=40, next_frame=600))
        assert gops[0].index == 40
        assert [g.discontinuity for g in gops] == [True] + [False] * (len(gops) - 1)

    def test_a_new_camera_has_none(self) -> None:
        """A camera's first gateway starts at GOP 0 with no discontinuity."""
        gops = _gops(SourceState("door", "a.mp4"))
        assert gops[0].index == 0
        assert not any(g.discontinuity for g in gops)
