"""Cameras outside what the pipeline is tuned for: the real gateway, on real clips made with
PyAV, against a real NATS, logs one `gateway.input_degraded` line per problem (not per GOP)
saying what to change; a clean clip gets none."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from nats.js import JetStreamContext
from structlog.testing import capture_logs

from framepipe.core.settings import Settings
from framepipe.media.sample import ClipSpec, make_clip
from framepipe.stages.gateway import Gateway
from tests.helpers import faces_clip


def variable_rate_clip(path: Path) -> Path:
    """H.264 whose frames come 33 ms apart, then 100 ms, then 33 ms... (a 'smart' frame rate)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        assert isinstance(stream, av.VideoStream)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        stream.options = {
            "preset": "ultrafast",
            "x264-params": "keyint=30:min-keyint=30:scenecut=0:bframes=0",
        }
        pts = 0
        for index in range(60):
            image = np.full((240, 320, 3), (index * 4) % 255, dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = pts, Fraction(1, 1000)
            pts += 100 if index % 3 == 2 else 33
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def clip_with_audio(path: Path) -> Path:
    """2 s of H.264 (320x240, 30 fps, 0.5 s GOPs) with an AAC track beside it, as many IP
    cameras send."""
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=30)
        assert isinstance(video, av.VideoStream)
        video.width, video.height, video.pix_fmt = 320, 240, "yuv420p"
        video.options = {"preset": "ultrafast", "x264-params": "keyint=15:min-keyint=15:scenecut=0:bframes=0"}
        audio = container.add_stream("aac", rate=48000)
        assert isinstance(audio, av.AudioStream)
        for index in range(60):
            image = np.full((240, 320, 3), (index * 4) % 255, dtype=np.uint8)
            container.mux(video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        for index in range(94):  # 2 s of 1024-sample frames
            samples = np.zeros((1, 1024), dtype=np.float32)
            sound = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            sound.sample_rate, sound.pts = 48000, index * 1024
            container.mux(audio.encode(sound))
        container.mux(video.encode(None))
        container.mux(audio.encode(None))
    return path


async def degraded(settings: Settings, camera: str, source: Path) -> list[dict[str, object]]:
    """The `gateway.input_degraded` events of one whole run of the real gateway."""
    with capture_logs() as logs:
        state = await Gateway(settings, camera, str(source), pacing="fast").run()
    assert state.state == "ended"
    return [e for e in logs if e["event"] == "gateway.input_degraded"]


class TestDegradedInputWarnings:
    async def test_clean_clip_gets_no_warning(self, js: JetStreamContext, nats_settings: Settings) -> None:
        """640x360, 30 fps, 0.5 s GOPs: what the pipeline is tuned for."""
        assert await degraded(nats_settings, "clean", faces_clip()) == []

    @pytest.mark.parametrize(
        ("spec", "gop_max_s", "problems"),
        [
            # MJPEG-like: every frame a keyframe, and 180 lines.
            (ClipSpec(width=320, height=180, seconds=2.0, gop=1, bframes=0), 10.0, {"short_gops", "resolution_low"}),  # noqa: E501
            # a 2 s keyframe interval against gateway.gop_max_seconds = 1.
            (ClipSpec(width=320, height=240, seconds=4.0, gop=60, bframes=0), 1.0, {"long_gop"}),
            # 3 fps.
            (ClipSpec(width=320, height=240, seconds=4.0, fps=3, gop=6, bframes=0), 10.0, {"frame_rate"}),
        ],
        ids=["all-keyframes-low-res", "long-gop", "low-fps"],
    )  # fmt: skip
    async def test_each_problem_once_with_advice(
        self,
        js: JetStreamContext,
        nats_settings: Settings,
        tmp_path: Path,
        spec: ClipSpec,
        gop_max_s: float,
        problems: set[str],
    ) -> None:
        """One line per problem for the whole clip, naming what was seen and what to change."""
        clip = make_clip(tmp_path / "clip.mp4", spec)
        settings = nats_settings.replace(gateway={"gop_max_seconds": gop_max_s})
        events = await degraded(settings, "odd", clip)
        assert sorted(str(e["problem"]) for e in events) == sorted(problems)
        for event in events:
            assert event["camera"] == "odd"
            assert event["seen"]
            assert "camera" in str(event["what_to_do"]) or "stream" in str(event["what_to_do"])

    async def test_an_audio_track_is_said_to_be_dropped_once(
        self, js: JetStreamContext, nats_settings: Settings, tmp_path: Path
    ) -> None:
        """A camera that sends sound: one `audio_dropped` line saying only video is recorded."""
        events = await degraded(nats_settings, "mic", clip_with_audio(tmp_path / "sound.mp4"))
        assert [e["problem"] for e in events] == ["audio_dropped"]
        assert events[0]["seen"] == "1 audio track"
        assert "video stream only" in str(events[0]["what_to_do"])

    async def test_variable_frame_rate(
        self, js: JetStreamContext, nats_settings: Settings, tmp_path: Path
    ) -> None:
        """Frame steps of 33 and 100 ms: one `variable_frame_rate` line for two GOPs."""
        events = await degraded(nats_settings, "vfr", variable_rate_clip(tmp_path / "vfr.mp4"))
        assert [e["problem"] for e in events] == ["variable_frame_rate"]
        assert "33 to 100 ms" in str(events[0]["seen"])
