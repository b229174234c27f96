"""Each camera's measured GOP rate: the real gateway, on real clips made with PyAV, against a
real nats-server, stores fps / GOP frames in FP_SOURCES, and feed-forward demand counts it."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import pytest
from nats.js import JetStreamContext
from structlog.testing import capture_logs

from framepipe.core.cluster_settings import StageScaling
from framepipe.core.settings import Settings
from framepipe.core.sources import read_source_state
from framepipe.media.gop import DemuxedPacket, Gop
from framepipe.media.sample import ClipSpec, make_clip
from framepipe.scaling.demand import CameraProfiles, expected_replicas, measured_gop_rates
from framepipe.stages.gateway import Gateway
from framepipe.stages.gateway.profile import GopRate

#: (camera, clip, GOPs/s it really sends): 30 fps in 1 s GOPs with B-frames; 10 fps in 4 s GOPs.
CAMERAS = (
    ("fast", ClipSpec(width=320, height=240, fps=30, seconds=5.0, gop=30, bframes=2), 1.0),
    ("slow", ClipSpec(width=320, height=240, fps=10, seconds=16.0, gop=40, bframes=0), 0.25),
)


class TestCameraProfile:
    async def test_each_camera_rate_is_measured_and_counted(
        self, js: JetStreamContext, nats_settings: Settings, tmp_path: Path
    ) -> None:
        """Two cameras of different fps and GOP length: each state holds its own GOPs/s and fps,
        and the demand is their sum, not two cameras at 1 GOP/s."""
        for camera, spec, _ in CAMERAS:
            clip = make_clip(tmp_path / f"{camera}.mp4", spec)
            state = await Gateway(nats_settings, camera, str(clip), pacing="fast", live_packets=False).run()
            assert state.state == "ended"
        for camera, spec, gops_per_s in CAMERAS:
            saved = await read_source_state(js, camera)
            assert saved is not None
            assert saved.gops_per_s == pytest.approx(gops_per_s, rel=0.02)
            assert saved.fps == pytest.approx(spec.fps, rel=0.02)
        measured = await measured_gop_rates(js)
        assert measured == pytest.approx({"fast": 1.0, "slow": 0.25}, rel=0.02)
        loads = CameraProfiles().loads(["fast", "slow"], measured)
        scaling = StageScaling()
        demand = expected_replicas(loads, {"decoder": 0.5}, scaling)
        # 1.25 GOPs/s ÷ (0.5 GOPs/s × 0.8 utilization); 1 GOP/s each would have said 5.
        assert demand["decoder"] == pytest.approx(1.25 / (0.5 * scaling.decoder.feed_forward_utilization))


class TestCameraProfiles:
    def test_unmeasured_camera_counts_one_gop_per_second_said_once(self) -> None:
        """No figure yet: 1 GOP/s, one log line per camera however often it is polled."""
        profiles = CameraProfiles()
        with capture_logs() as logs:
            for _ in range(3):
                loads = profiles.loads(["new", "known"], {"known": 0.5})
        assert [(c.name, c.gops_per_s) for c in loads] == [("new", 1.0), ("known", 0.5)]
        assumed = [e for e in logs if e["event"] == "demand.rate_assumed"]
        assert [e["camera"] for e in assumed] == ["new"]


class TestGopRate:
    def test_discontinuity_restarts_the_interval_and_smoothing_follows_a_change(self) -> None:
        """A jump in timestamps is not a GOP interval; a camera that halves its rate is followed."""

        def gop(index: int, start: int, frames: int, *, jump: bool = False) -> Gop:
            packets = [DemuxedPacket(start + i, start + i, i == 0, b"") for i in range(frames)]
            return Gop(index, 0, packets, discontinuity=jump)

        rate, base = GopRate(), Fraction(1, 10)  # 10 ticks a second, one tick a frame
        for index in range(5):
            rate.add(gop(index, index * 10, 10), base)
        assert rate.gops_per_s == pytest.approx(1.0)
        rate.add(gop(5, 10_000, 10, jump=True), base)  # a reconnect: 995 s later
        assert rate.gops_per_s == pytest.approx(1.0)
        for index in range(6, 40):
            rate.add(gop(index, 10_000 + (index - 5) * 20, 20), base)
        assert rate.gops_per_s == pytest.approx(0.5, rel=0.01)
        assert rate.fps == pytest.approx(10.0, rel=0.01)
