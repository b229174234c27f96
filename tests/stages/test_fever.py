"""Fever screening: a paired radiometric camera, the homography, the fever attribute.

Real media throughout: the visible clip is made of real portraits, its radiometric twin
is FFV1 gray16le (tests/thermal_media.py); both go through real gateways into a real
nats-server; landmarks are dlib's on the decoded visible frames.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import structlog
from nats.js import JetStreamContext
from typer.testing import CliRunner

from framepipe.cli.app import app
from framepipe.core import messages
from framepipe.core.errors import ConfigError
from framepipe.core.messages import EncodeItem, GopMessage
from framepipe.core.settings import Settings, ThermalSettings
from framepipe.core.topology import Names
from framepipe.local.cameras import CameraSpec, add_camera, delete_camera
from framepipe.media.codec import decode_gop
from framepipe.media.thermal import decode_thermal, fit_homography, map_points
from framepipe.stages.analysis.attributes import attribute_class
from framepipe.stages.analysis.attributes.base import NO_READING, FaceSample, Reading
from framepipe.stages.analysis.attributes.fever import ALERT, FeverAttribute, canthus_region
from framepipe.stages.analysis.embedder import CHIP_PADDING, CHIP_SIZE, FaceEmbedder
from framepipe.stages.gateway import Gateway
from tests.thermal_media import HOMOGRAPHY, PEOPLE, PairedClips, make_paired_clips

VISIBLE, THERMAL = "lobby", "lobby-ir"


@pytest.fixture(scope="module")
def embedder() -> FaceEmbedder:
    return FaceEmbedder()


@pytest.fixture(scope="module")
def clips(embedder: FaceEmbedder, tmp_path_factory: pytest.TempPathFactory) -> PairedClips:
    return make_paired_clips(tmp_path_factory.mktemp("thermal"), embedder)


def _settings(base: Settings, homography: list[float] = HOMOGRAPHY) -> Settings:
    return base.replace(thermal={"homography": json.dumps({THERMAL: homography})})


async def _stream_gops(js: JetStreamContext, stream: str) -> list[tuple[int, GopMessage]]:
    info = await js.stream_info(stream)
    out = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        raw = await js.get_msg(stream, seq)
        out.append((seq, messages.decode(raw.headers, raw.data or b"", GopMessage)))
    return out


def _samples(embedder: FaceEmbedder, gop: GopMessage) -> dict[int, list[FaceSample]]:
    """Per person (0: left, 1: right), dlib-aligned samples of two frames of the GOP."""
    base, first = Fraction(*gop.time_base), min(gop.pts)
    frames = list(decode_gop(gop))
    out: dict[int, list[FaceSample]] = {0: [], 1: []}
    for index in (0, len(frames) - 2):
        frame = frames[index]
        image = frame.to_ndarray(format="rgb24")
        for box in embedder.detect(image):
            x1, y1, x2, y2 = (round(v) for v in box)
            shape = embedder.shape_predictor(image, embedder._dlib.rectangle(x1, y1, x2, y2))
            landmarks = np.array([(shape.part(i).x, shape.part(i).y) for i in range(5)], np.float32)
            chip = np.asarray(
                embedder._dlib.get_face_chip(image, shape, size=CHIP_SIZE, padding=CHIP_PADDING)
            )
            person = 0 if (box[0] + box[2]) / 2 < image.shape[1] / 2 else 1
            sample = FaceSample(
                gop.frame_offset + index,
                float((frame.pts - first) * base),  # seconds into the GOP, as the stage gives it
                box,
                landmarks,
                chip,
                (image.shape[1], image.shape[0]),
            )
            out[person].append(sample)
    return out


async def _run_gateways(settings: Settings, clips: PairedClips) -> None:
    """Both cameras read in real time at once, as a paired installation would."""
    visible = Gateway(settings, VISIBLE, str(clips.visible), "realtime")
    thermal = Gateway(settings, THERMAL, str(clips.thermal), "realtime", thermal_of=VISIBLE)
    states = await asyncio.wait_for(asyncio.gather(visible.run(), thermal.run()), 60)
    assert [s.state for s in states] == ["ended", "ended"]


class TestRegistration:
    """The visible → thermal homography: settings, DLT from 4 pairs, the calibrate command."""

    def test_dlt_recovers_a_known_homography_and_refuses_collinear_points(self) -> None:
        """4 pairs through a known perspective map give it back; 3 points on a line are refused."""
        truth = np.array([[0.24, 0.02, 5.0], [-0.01, 0.26, 3.0], [1e-5, 2e-5, 1.0]])
        visible = np.array([[30.0, 40.0], [600.0, 20.0], [620.0, 460.0], [10.0, 450.0]])
        thermal = map_points(truth, visible)
        fitted = fit_homography([tuple(p) for p in visible], [tuple(p) for p in thermal])
        assert np.allclose(fitted, truth, atol=1e-6)
        with pytest.raises(ConfigError, match="three of the 4 visible points lie on one line"):
            fit_homography([(0, 0), (100, 100), (200, 200), (0, 300)], [(0, 0), (9, 0), (9, 9), (0, 9)])

    def test_settings_parse_the_table_and_refuse_singular_matrices(self) -> None:
        """[thermal.homography] camera = [9 numbers] round-trips through the environment."""
        from framepipe.core.loader import settings_from

        settings = settings_from({"thermal": {"homography": {THERMAL: HOMOGRAPHY}}}, {})
        assert settings.thermal.homographies()[THERMAL][0] == 0.25
        env = {k: v for k, v in settings.to_env().items() if k.startswith("FRAMEPIPE_THERMAL__")}
        assert settings_from({}, env).thermal == settings.thermal
        with pytest.raises(ConfigError, match="singular"):
            ThermalSettings(homography=json.dumps({THERMAL: [1, 2, 3, 2, 4, 6, 0, 0, 1]}))

    def test_calibrate_prints_config_lines_and_refuses_a_face_outside_in_one_line(
        self, tmp_path: Path
    ) -> None:
        """`thermal calibrate` prints [thermal.homography]; a map off the thermal frame: one line, exit 2."""
        runner = CliRunner()
        pairs = ["0,0=0,0", "640,0=160,0", "640,480=160,120", "0,480=0,120"]
        result = runner.invoke(
            app, ["thermal", "calibrate", THERMAL, *pairs, "--save", str(tmp_path / "h.toml")]
        )
        assert result.exit_code == 0, result.output
        assert f"{THERMAL} = [0.25, 0.0, 0.0, 0.0, 0.25, 0.0, 0.0, 0.0, 1.0]" in result.output
        assert "[thermal.homography]" in (tmp_path / "h.toml").read_text()
        mirrored = ["0,0=160,0", "640,0=320,0", "640,480=320,120", "0,480=160,120"]  # shifted off
        bad = runner.invoke(
            app,
            [
                "thermal",
                "calibrate",
                THERMAL,
                *mirrored,
                "--thermal-size",
                "400x140",
                "--visible-size",
                "1920x480",
            ],
        )
        assert bad.exit_code == 2
        assert "outside the 400x140 thermal frame" in bad.output
        assert len(bad.output.strip().splitlines()) == 1


class TestFeverOnPairedCameras:
    """Two real gateways (visible H.264, thermal FFV1 16-bit) into NATS; the attribute on real landmarks."""

    async def test_38_4_alerts_once_36_6_never_and_cooling_then_warming_does_not_alert_again(
        self, js: JetStreamContext, nats_settings: Settings, clips: PairedClips, embedder: FaceEmbedder
    ) -> None:
        """Readings within 0.3 °C of each face's temperature; one alert.fever for 38.4, none for 36.6."""
        settings = _settings(nats_settings)
        await _run_gateways(settings, clips)
        thermal = await _stream_gops(js, Names.THERMAL)
        assert thermal
        assert all(g.camera == THERMAL and g.pixel_format == "gray16le" for _, g in thermal)
        decoded = [v for _, g in thermal for _, v in decode_thermal(g)]
        assert all((a == b).all() for a, b in zip(decoded, clips.thermal_frames, strict=True))  # lossless
        visible = await _stream_gops(js, Names.VIDEO)
        assert len(visible) == 6
        attribute = attribute_class("fever")(settings)
        assert isinstance(attribute, FeverAttribute)
        attribute.load()
        readings: dict[int, list[Reading]] = {0: [], 1: []}
        for seq, gop in visible:
            side = await attribute.gather(js, EncodeItem(VISIBLE, gop.gop, seq, ()), gop)
            assert side is not None
            assert side.camera == THERMAL
            for person, samples in _samples(embedder, gop).items():
                assert samples, f"no face {person} in GOP {gop.gop}"
                readings[person].append(attribute.read(samples, side))
        for person, (_, _, face_c) in enumerate(PEOPLE):
            values = [r.value for r in readings[person]]
            assert all(isinstance(v, float) and abs(v - face_c) < 0.3 for v in values), (face_c, values)
        alerts = {person: self._alerts(attribute, readings[person]) for person in readings}
        assert alerts == {0: [ALERT], 1: []}
        # The same person cooling below the band (36.6 < 37.5 - 0.5) and warming again: still one.
        hot, cool = readings[0], readings[1]
        assert self._alerts(attribute, [hot[0], *cool, *hot[1:], *cool, hot[0]]) == [ALERT]

    @staticmethod
    def _alerts(attribute: FeverAttribute, readings: list[Reading]) -> list[str]:
        state: dict[str, Any] = {}
        alerts = []
        for reading in readings:
            followed = attribute.follow(state, reading)
            state = dict(followed.state)
            if followed.alert:
                alerts.append(followed.alert)
        return alerts


class TestNoReading:
    """Missing or late thermal frames and a face mapped off the thermal frame: no reading, never a guess."""

    async def test_missing_late_and_outside_give_no_reading(
        self, js: JetStreamContext, nats_settings: Settings, clips: PairedClips, embedder: FaceEmbedder
    ) -> None:
        """No thermal camera; thermal 30 s older than the face; homography off the frame (one line)."""
        settings = _settings(nats_settings)
        await Gateway(settings, VISIBLE, str(clips.visible), "fast").run()
        seq, gop = (await _stream_gops(js, Names.VIDEO))[2]
        samples = _samples(embedder, gop)[0]
        attribute = FeverAttribute(settings)
        item = EncodeItem(VISIBLE, gop.gop, seq, ())
        assert await attribute.gather(js, item, gop) is None  # no thermal camera yet
        assert attribute.read(samples, None) == NO_READING
        await Gateway(settings, THERMAL, str(clips.thermal), "fast", thermal_of=VISIBLE).run()
        # "fast" pacing stamps GOPs as they go out: put the visible GOP at the thermal GOPs' time.
        gop = dataclasses.replace(gop, captured_at=(await _stream_gops(js, Names.THERMAL))[1][1].captured_at)
        late = dataclasses.replace(gop, captured_at=gop.captured_at + 30.0)  # thermal frames 30 s before
        side = await attribute.gather(js, item, late)
        assert side is None or attribute.read(samples, side) == NO_READING
        # A frame in the window but farther than max_skew_s from every sample: no reading either.
        side = await attribute.gather(js, item, gop)
        assert side is not None
        last_frame = side.frames()[-1][0]
        first_sample = min(side.start_at + s.pts for s in samples)
        skewed = dataclasses.replace(side, start_at=side.start_at + last_frame + 0.3 - first_sample)
        assert (
            FeverAttribute(settings.replace(thermal={"max_skew_s": 0.2})).read(samples, skewed) == NO_READING
        )
        assert FeverAttribute(settings.replace(thermal={"max_skew_s": 5.0})).read(samples, skewed).present
        off = FeverAttribute(_settings(nats_settings, [0.25, 0, 400.0, 0, 0.25, 0, 0, 0, 1]))
        with structlog.testing.capture_logs() as logs:
            assert off.read(samples, side) == NO_READING
            assert off.read(samples, side) == NO_READING
        outside = [e for e in logs if e["event"] == "thermal.face_outside_frame"]
        assert len(outside) == 1
        assert "outside the 160x120 frame" in outside[0]["why"]

    def test_the_region_sits_between_the_inner_eye_corners_above_the_nose(
        self, embedder: FaceEmbedder
    ) -> None:
        """dlib's points 1 and 3 are the inner corners on a real frontal photo; the region is above them."""
        from PIL import Image

        from tests.helpers import face_photo

        image = np.asarray(Image.open(face_photo("obama.jpg")).convert("RGB"))
        box = embedder.detect(image)[0]
        shape = embedder.shape_predictor(image, embedder._dlib.rectangle(*(round(v) for v in box)))
        points = np.array([(shape.part(i).x, shape.part(i).y) for i in range(5)], np.float32)
        assert abs(points[1, 0] - points[3, 0]) < abs(points[0, 0] - points[2, 0])  # 1, 3: inner
        region = canthus_region(points)
        assert region[:, 1].max() < points[4, 1]  # above the nose
        assert min(points[1, 0], points[3, 0]) > region[:, 0].min()
        assert max(points[1, 0], points[3, 0]) < region[:, 0].max()


class TestPairing:
    """`cameras add --thermal-of`: the visible partner must exist, and has at most one thermal camera."""

    async def test_unpaired_and_second_thermal_cameras_are_refused(
        self, js: JetStreamContext, nats_settings: Settings, clips: PairedClips
    ) -> None:
        """No partner: one line naming what to add; a second thermal camera for one visible one, or
        removing a visible camera that still has its thermal camera: refused."""
        thermal = CameraSpec(THERMAL, str(clips.thermal), thermal_of=VISIBLE)
        with pytest.raises(ConfigError, match=f"has no visible partner: add camera {VISIBLE} first") as err:
            await add_camera(nats_settings, thermal)
        assert "\n" not in str(err.value)
        await add_camera(nats_settings, CameraSpec(VISIBLE, str(clips.visible)))
        await add_camera(nats_settings, thermal)
        entry = await (await js.key_value(Names.CAMERAS_BUCKET)).get(THERMAL)
        assert json.loads(entry.value or b"{}")["thermal_of"] == VISIBLE
        with pytest.raises(ConfigError, match=f"already has thermal camera {THERMAL}"):
            await add_camera(nats_settings, CameraSpec("lobby-ir2", str(clips.thermal), thermal_of=VISIBLE))
        with pytest.raises(ConfigError, match="is itself a thermal camera"):
            await add_camera(nats_settings, CameraSpec("x-ir", str(clips.thermal), thermal_of=THERMAL))
        with pytest.raises(ConfigError, match=f"has thermal camera {THERMAL}: remove it first"):
            await delete_camera(nats_settings, VISIBLE)  # it would leave the thermal camera unpaired
        assert await delete_camera(nats_settings, THERMAL)
        assert await delete_camera(nats_settings, VISIBLE)


class TestThermalOverRtsp:
    """The thermal clip served live by a real GStreamer RTSP server, into the gateway, onto THERMAL."""

    async def test_live_thermal_camera_reaches_the_thermal_stream_bit_for_bit(
        self, js: JetStreamContext, nats_settings: Settings, clips: PairedClips, tmp_path: Path
    ) -> None:
        """RFC 4175 raw RGB (16-bit counts packed high/low) decodes to the clip's exact frames."""
        from tests.rtsp import RtspServer, require_gst
        from tests.thermal_media import FPS, write_packed_rgb

        require_gst()
        packed = write_packed_rgb(tmp_path, clips.thermal_frames, FPS, repeat=3)
        server = RtspServer({"thermal": packed}, tmp_path / "rtsp.log").start()
        gateway = Gateway(nats_settings, THERMAL, server.url("thermal"), thermal_of=VISIBLE)
        task = asyncio.create_task(gateway.run())
        try:
            async with asyncio.timeout(30):
                while gateway.published < 15:
                    await asyncio.sleep(0.2)
        finally:
            gateway.stop()
            await asyncio.wait_for(task, 20)
            server.stop()
        thermal = await _stream_gops(js, Names.THERMAL)
        assert len(thermal) >= 15
        assert all(g.pixel_format == "rgb24" and g.codec == "rawvideo" for _, g in thermal)
        assert (await js.stream_info(Names.VIDEO)).state.messages == 0  # nothing for the video pipeline
        decoded = [v for _, g in thermal for _, v in decode_thermal(g)]
        originals = {f.tobytes() for f in clips.thermal_frames}
        assert decoded
        assert all(v.tobytes() in originals for v in decoded)

    def test_the_k8s_camera_deployment_of_a_thermal_camera_names_its_partner(self) -> None:
        """`cameras add --thermal-of -k`: the gateway gets --thermal-of and the pairing label."""
        from framepipe.cluster.cameras import THERMAL_LABEL, camera_objects
        from framepipe.core.cluster_settings import ClusterConfig

        deployment, _ = camera_objects(Settings(), ClusterConfig(), THERMAL, "rtsp://ir", thermal_of=VISIBLE)
        args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        assert args[-2:] == ["--thermal-of", VISIBLE]
        assert deployment["metadata"]["labels"][THERMAL_LABEL] == VISIBLE
        visible, _ = camera_objects(Settings(), ClusterConfig(), VISIBLE, "rtsp://cam/x")
        assert "--thermal-of" not in visible["spec"]["template"]["spec"]["containers"][0]["args"]
