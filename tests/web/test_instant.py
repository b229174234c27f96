"""The instant live view: the camera's own packets over WHEP as the gateway reads them, boxes beside it.

Real parts throughout: a nats-server (fixtures), the gateway playing a generated clip in
real time (its frames carry their number, ``media.stamp``), the web server, aiortc as the
WHEP client (``tests/whep_client.py``) and headless Chromium for the console.
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import av
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from framepipe.core import bus, messages
from framepipe.core.errors import CorruptMediaError
from framepipe.core.messages import Detection, DetectionsMessage, FrameDetections
from framepipe.core.settings import Settings
from framepipe.core.sources import SourceState
from framepipe.core.topology import Names
from framepipe.core.viewers import mark_watched, viewers_bucket
from framepipe.media.live_packets import LivePacket, annex_b, avcc_parameter_sets
from framepipe.media.sample import ClipSpec, make_clip
from framepipe.media.stamp import read_stamp
from framepipe.stages.gateway import Gateway
from framepipe.web.server import WebServer
from tests.helpers import MEDIA
from tests.web.test_web import DevTools, _chromium, _free_port, _get
from tests.web.test_whep import _publish_segment
from tests.whep_client import WhepViewer, stamps

#: 4 s GOPs: a picture that arrives before its GOP is complete cannot have come through VIDEO.
SPEC = ClipSpec(width=320, height=180, fps=25, seconds=8.0, gop=100, bframes=0, stamp=True)
GOP_S = SPEC.gop / SPEC.fps
#: the box every frame "has" in the tests' detections (source pixels)
BOX = (40.0, 30.0, 200.0, 150.0)


def _clip() -> Path:
    path = MEDIA / "instant_gop100_stamp.mp4"
    if not path.is_file():
        make_clip(path, SPEC)
    return path


def _live_packets(path: Path) -> list[LivePacket]:
    """The clip's packets as the gateway forwards them (MP4: AVCC, extradata avcC)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        extradata = bytes(stream.codec_context.extradata or b"")
        out = []
        for seq, packet in enumerate(p for p in container.demux(stream) if p.size):
            assert packet.pts is not None
            assert packet.time_base is not None
            out.append(
                LivePacket(
                    "h264", int(packet.pts), int(packet.dts if packet.dts is not None else packet.pts),
                    packet.time_base, bool(packet.is_keyframe), seq, time.time(), bytes(packet),
                    extradata if packet.is_keyframe else b"",
                )
            )  # fmt: skip
        return out


class TestLivePackets:
    def test_round_trip_and_truncation(self) -> None:
        """A packet survives encode/decode; cut-off bytes are a CorruptMediaError, not garbage."""
        packet = _live_packets(_clip())[0]
        assert LivePacket.decode(packet.encode()) == packet
        with pytest.raises(CorruptMediaError):
            LivePacket.decode(packet.encode()[:20])

    def test_viewer_joining_mid_gop_decodes_cleanly_from_the_next_keyframe(self) -> None:
        """Packets from mid-GOP on, as a viewer gets them: skip to the keyframe, convert AVCC to
        Annex B with its SPS/PPS, and a fresh decoder shows exactly frames 100.. with no damage."""
        packets = _live_packets(_clip())[37:]
        start = next(i for i, p in enumerate(packets) if p.keyframe)
        parameter_sets, length_size = avcc_parameter_sets(packets[start].extradata)
        decoder = av.CodecContext.create("h264", "r")  # no extradata: only what the stream carries
        shown: list[int | None] = []
        for live in packets[start:]:
            for frame in decoder.decode(av.Packet(annex_b(live, parameter_sets, length_size))):
                shown.append(read_stamp(frame.to_ndarray(format="rgb24")))
        for frame in decoder.decode(None):
            shown.append(read_stamp(frame.to_ndarray(format="rgb24")))
        assert shown == list(range(SPEC.gop, SPEC.frames))


async def _register(js: JetStreamContext, camera: str) -> None:
    """The camera's source state, as its gateway writes it: the server knows it before any packet."""
    kv = await js.key_value(Names.SOURCES_BUCKET)
    await kv.put(camera, SourceState(camera, "file").to_json())


async def _publish_boxes_for_packets(nc: Client, camera: str, delay_s: float = 0.0) -> Any:
    """A stand-in detector: a DETECTIONS message (the product's JSON) for every packet's frame."""

    async def on_packet(msg: Msg) -> None:
        live = LivePacket.decode(msg.data)
        frame = round(live.pts_s * SPEC.fps)
        message = DetectionsMessage(
            camera=camera, gop=frame // SPEC.gop, part=0, parts=1,
            frames=(FrameDetections(frame, live.pts, (Detection(BOX, 0.9, "face"),)),),
        )  # fmt: skip
        headers, body = messages.encode(message)
        if not delay_s:
            await nc.publish(Names.subject(Names.DETECTIONS, camera), body, headers=headers)
            return
        # Later, without holding up the next packet's callback (they run one at a time).
        task = asyncio.ensure_future(_publish_later(nc, camera, body, headers, delay_s))
        pending.add(task)
        task.add_done_callback(pending.discard)

    pending: set[asyncio.Future[None]] = set()
    return await nc.subscribe(Names.live_subject(camera), cb=on_packet)


async def _publish_later(
    nc: Client, camera: str, body: bytes, headers: dict[str, str], delay_s: float
) -> None:
    await asyncio.sleep(delay_s)
    await nc.publish(Names.subject(Names.DETECTIONS, camera), body, headers=headers)


@pytest.fixture
async def web(nats_settings: Settings, js: JetStreamContext) -> Any:
    server = await asyncio.to_thread(lambda: WebServer(nats_settings, port=0).start())
    try:
        yield server
    finally:
        await asyncio.to_thread(server.stop)


def _gateway(settings: Settings, source: Path) -> Gateway:
    return Gateway(settings.replace(gateway={"metrics_port": -1}), "door", str(source), "realtime")


class TestInstantView:
    async def test_frames_before_the_first_gop_is_complete_in_order_with_timed_boxes(
        self, web: WebServer, js: JetStreamContext, nc: Client, nats_settings: Settings
    ) -> None:
        """An aiortc viewer of ?view=instant decodes the camera's first frame long before the gateway
        completes (let alone publishes) GOP 0, then every frame in order; a viewer that joins
        mid-GOP starts at the next keyframe with no broken frame; each box on the data channel
        carries the RTP timestamp of exactly the frame it was detected in."""
        source = _clip()
        await _register(js, "door")
        detector = await _publish_boxes_for_packets(nc, "door")
        first = WhepViewer(web.url, "door", view="instant", boxes=True)
        assert (reply := await first.connect()).status == 201, reply
        started = time.time()
        camera = asyncio.ensure_future(_gateway(nats_settings, source).run())
        first_frames = asyncio.ensure_future(first.frames(until_idle_s=3.0))
        await asyncio.sleep(1.5)  # frame ~37 of GOP 0's 100
        joiner = WhepViewer(web.url, "door", view="instant")
        assert (await joiner.connect()).status == 201
        joined = time.time()
        joiner_frames = await joiner.frames(until_idle_s=3.0)
        frames = await first_frames
        await camera
        await detector.unsubscribe()
        raw = await js.get_msg(Names.VIDEO, 1)
        gop0 = messages.decode(raw.headers, raw.data or b"", messages.GopMessage)
        assert web.whep is not None
        stats = web.whep.stats()["door"]["instant"]
        await first.close()
        await joiner.close()

        got = stamps(frames)
        first_s, gop0_s = first.arrived[0] - started, gop0.captured_at - started
        print(f"instant: first frame {first_s:.2f} s after the camera started, GOP 0 complete at "
              f"{gop0_s:.2f} s; {len(got)}/{SPEC.frames} frames; {stats}")  # fmt: skip
        assert gop0.gop == 0
        assert first.arrived[0] < gop0.captured_at, "the first frame came no earlier than its whole GOP"
        assert first.arrived[0] - started < GOP_S
        assert len(got) >= SPEC.frames - 2, f"only {len(got)} of {SPEC.frames} frames"
        assert got == list(range(len(got))), f"first {got[:5]}, last {got[-5:]}"

        assert joined - started < GOP_S, "the joiner was not connected before GOP 1 (machine too slow?)"
        late = stamps(joiner_frames)
        assert late, "the mid-GOP joiner decoded nothing"
        assert late[0] == SPEC.gop, f"the mid-GOP joiner started at {late[:3]}, not frame {SPEC.gop}"
        assert late == list(range(SPEC.gop, SPEC.gop + len(late))), f"broken frames: {late}"

        assert first.boxes is not None
        rows = [row for message in first.boxes for row in message["frames"] if row["rtp"] is not None]
        by_rtp = dict(zip(first.rtp, got, strict=True))  # the frames' RTP timestamps, as sent
        matched = [row for row in rows if row["rtp"] in by_rtp]
        assert len(matched) >= 0.9 * len(got), (
            f"{len(matched)} timed boxes for {len(got)} frames ({len(first.boxes)} messages, {len(rows)} "
            f"rows with an RTP time; first {first.boxes[:1]}, frame RTP times {list(by_rtp)[:3]})"
        )
        assert all(by_rtp[row["rtp"]] == row["frame"] for row in matched), "a box timed to another frame"
        assert matched[0]["detections"][0]["box"] == list(BOX)
        assert (len(web.whep.sessions), len(web.whep.instant_feeds)) == (0, 0)

    async def test_gateway_forwards_only_while_the_instant_view_is_watched(
        self, js: JetStreamContext, nc: Client, nats_settings: Settings
    ) -> None:
        """No viewer at GOP 0: none of its packets go to live.<camera>; a viewer who comes
        mid-GOP (instant.<camera> written, as the web server does) gets every packet from
        the next GOP's keyframe on; every GOP still goes to VIDEO."""
        await bus.ensure_topology(js, nats_settings)
        got: list[LivePacket] = []

        async def on_packet(msg: Msg) -> None:
            got.append(LivePacket.decode(msg.data))

        subscription = await nc.subscribe(Names.live_subject("door"), cb=on_packet)
        gateway = _gateway(nats_settings, _clip())
        camera = asyncio.ensure_future(gateway.run())
        await asyncio.sleep(GOP_S / 2)  # mid-GOP 0: its packets are going out unwatched
        await mark_watched(await viewers_bucket(js), "door", "test", view="instant")
        await camera
        await asyncio.sleep(0.2)  # the last packets' delivery
        await subscription.unsubscribe()
        assert gateway.live is not None
        assert (gateway.published, gateway.live.unwatched, gateway.live.forwarded) == (2, SPEC.gop, SPEC.gop)
        assert got, "no packet after the viewer came"
        assert got[0].keyframe
        assert [round(p.pts_s * SPEC.fps) for p in got] == list(range(SPEC.gop, SPEC.frames))

    async def test_unknown_view_is_one_line_400(self, web: WebServer, js: JetStreamContext) -> None:
        """?view= other than annotated/instant: 400 with one line; the instant view still answers."""
        await _register(js, "door")
        reply = await WhepViewer(web.url, "door", view="fisheye").connect()
        assert reply.status == 400
        assert reply.body.count("\n") == 1
        assert "view must be" in reply.body
        viewer = WhepViewer(web.url, "door", view="instant")
        assert (await viewer.connect()).status == 201
        await viewer.close()


# Box-coloured pixels on the console's canvas now: opaque (on time) and faded (late).
CANVAS_PIXELS_JS = """
(() => {
  const c = document.querySelector('#cam-door canvas.overlay'), s = window.framepipeLiveBoxes.door;
  const v = document.querySelector('#cam-door video');
  if (!c || !s || !c.width) return null;
  const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let strong = 0, faint = 0;
  for (let i = 0; i < px.length; i += 4) {
    const far = Math.abs(px[i] - 40) > 40 || Math.abs(px[i + 1] - 230) > 40 || Math.abs(px[i + 2] - 60) > 40;
    if (far) continue;
    if (px[i + 3] > 200) strong++; else if (px[i + 3] > 60) faint++;
  }
  return {strong, faint, late: s.late, behind: s.behindS, drawn: s.drawn, onTime: s.onTimeDrawn,
          lateDrawn: s.lateDrawn, t: v.currentTime, view: document.querySelector('#cam-door').dataset.view};
})()
"""


@pytest.mark.integration
async def test_console_plays_instant_view_with_boxes_in_headless_chromium(
    web: WebServer, js: JetStreamContext, nc: Client, nats_settings: Settings, tmp_path: Path
) -> None:
    """The console's default view plays the camera over WebRTC at once and draws the boxes of the
    data channel on its canvas: opaque while they keep up with the picture, faded (late) once the
    detector answers 0.5 s behind it (a pixel check of the canvas)."""
    browser = _chromium()
    if browser is None:
        pytest.skip("Debian chromium is not installed (apt-get install chromium; .ci/run does)")
    await _publish_segment(js, "door", 0)  # the console lists cameras that have a segment
    await _register(js, "door")
    port = _free_port()
    chrome = subprocess.Popen(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'chromium'}", "--autoplay-policy=no-user-gesture-required",
         "--window-size=1280,800", f"--remote-debugging-port={port}", "--remote-allow-origins=*", web.url],
        stdout=subprocess.DEVNULL, stderr=open(tmp_path / "chromium.log", "wb"),  # noqa: SIM115
    )  # fmt: skip
    devtools: DevTools | None = None
    detectors: list[Any] = []
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                targets = json.loads(await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/json/list"))
                page = next(t for t in targets if t["type"] == "page")
                break
            except (OSError, StopIteration):
                assert time.monotonic() < deadline, "chromium did not open its DevTools port"
                await asyncio.sleep(0.3)
        devtools = DevTools(page["webSocketDebuggerUrl"])
        assert web.whep is not None
        while not any(s.pc.connectionState == "connected" for s in list(web.whep.sessions.values())):
            assert time.monotonic() < deadline + 30, "the console opened no WebRTC session"
            await asyncio.sleep(0.2)
        # On time for GOP 0; for GOP 1 the "detector" answers 0.5 s after the picture.
        detectors.append(await _publish_boxes_for_packets(nc, "door"))
        camera = asyncio.ensure_future(_gateway(nats_settings, _clip()).run())
        samples: list[dict[str, Any]] = []
        switched = False
        while not camera.done():
            await asyncio.sleep(0.25)
            if not switched and samples and samples[-1]["t"] > GOP_S - 0.5:
                await detectors.pop().unsubscribe()
                detectors.append(await _publish_boxes_for_packets(nc, "door", delay_s=0.5))
                switched = True
            sample = await asyncio.to_thread(devtools.evaluate, CANVAS_PIXELS_JS)
            if sample:
                samples.append(sample)
        await camera
        shot = await asyncio.to_thread(devtools.call, "Page.captureScreenshot", format="png")
        (tmp_path / "instant.png").write_bytes(base64.b64decode(shot["data"]))
    finally:
        for detector in detectors:
            await detector.unsubscribe()
        if devtools is not None:
            devtools.close()
        chrome.terminate()
        chrome.wait(10)
    summary = [(round(s["t"], 1), s["strong"], s["faint"], s["late"], s["behind"]) for s in samples]
    assert samples, "the console never drew a frame of the camera"
    assert samples[-1]["view"] == "instant"
    assert max(s["t"] for s in samples) > 2.0, f"the video did not play: {summary}"
    on_time = [s for s in samples if s["drawn"] and not s["late"] and s["strong"] >= 60]
    late = [s for s in samples if s["late"] and s["faint"] >= 60 and s["strong"] == 0]
    assert on_time, (
        f"no opaque box while detections kept up: (t, opaque px, faded px, late, behind s) {summary}"
    )
    assert switched
    assert late, f"no faded box while detections were 0.5 s late: {summary}"
    # How far behind: the detector's 0.5 s (the first, as the on-time boxes stop, are younger).
    behind = sorted(s["behind"] for s in late)
    assert 0.35 < behind[len(behind) // 2] < 1.0, behind


@pytest.mark.integration
async def test_rtsp_camera_is_forwarded_packet_by_packet_as_read(
    web: WebServer, js: JetStreamContext, nats_settings: Settings, tmp_path: Path
) -> None:
    """A real RTSP camera (GStreamer): the gateway forwards each packet from its demux thread as
    it reads it, so an instant viewer decodes the camera's frames, in order and undamaged, long
    before the gateway has the camera's first GOP complete."""
    from tests.rtsp import RtspServer, require_gst

    require_gst()
    rtsp = RtspServer({"cam": _clip()}, tmp_path / "rtsp.log").start()
    try:
        await _register(js, "door")
        viewer = WhepViewer(web.url, "door", view="instant")
        assert (await viewer.connect()).status == 201
        gateway = Gateway(nats_settings.replace(gateway={"metrics_port": -1}), "door", rtsp.url("cam"))
        started = time.time()
        camera = asyncio.ensure_future(gateway.run())
        # The clip's 200 frames, then the RTSP session ends (and the gateway reconnects).
        frames = await asyncio.wait_for(viewer.frames(until_idle_s=3.0, limit=SPEC.gop + 50), 60)
        gateway.stop()
        await asyncio.wait_for(camera, 30)
        raw = await js.get_msg(Names.VIDEO, 1)
        gop0 = messages.decode(raw.headers, raw.data or b"", messages.GopMessage)
        await viewer.close()
    finally:
        rtsp.stop()
    got = stamps(frames)
    print(f"rtsp instant: first frame {viewer.arrived[0] - started:.2f} s, GOP 0 published "
          f"{gop0.captured_at - started:.2f} s after the gateway started; {len(got)} frames")  # fmt: skip
    assert viewer.arrived[0] < gop0.captured_at - 1.0, "the first frame did not come well before GOP 0"
    assert len(got) >= SPEC.gop, f"only {len(got)} frames"
    assert got[0] is not None
    assert got[0] % SPEC.gop == 0, f"started at frame {got[0]}, not at a keyframe"
    assert got == list(range(got[0], got[0] + len(got))), f"damaged or out of order: {got}"
