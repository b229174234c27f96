"""HLS from the OUTPUT stream, export, and the web console in headless Chromium."""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from framepipe.core.settings import Settings
from framepipe.core.topology import Names
from framepipe.local.supervisor import LocalSystem
from framepipe.media.annotate import BOX_COLOUR
from framepipe.media.sample import ClipSpec, face_box, make_clip
from framepipe.web.export import export, parse_when
from framepipe.web.index import CameraIndex, OutputIndex, Segment, render_playlist
from framepipe.web.server import HLS_JS, WebServer
from tests.helpers import MEDIA, REPO

CLIP = ClipSpec(width=640, height=360, seconds=3.0, gop=15, bframes=2)
LIVE = ClipSpec(width=960, height=540, fps=25, seconds=12.0, gop=25, bframes=0)
SCREENSHOT = REPO / "output" / "test-artifacts" / "console-{live}.png"


def _clip(name: str, spec: ClipSpec) -> Path:
    path = MEDIA / name
    if not path.is_file():
        make_clip(path, spec)
    return path


def _seg(gop: int, arrived: float = 0.0, seq: int = 0) -> Segment:
    return Segment(gop, seq or gop + 1, 1.0, False, 15, 15, 0.0, arrived)


def _uris(playlist: str) -> list[str]:
    return [line for line in playlist.splitlines() if line and not line.startswith("#")]


# -- the index: ordering, gaps, live window -----------------------------------


def test_playlist_orders_by_gop_and_waits_for_a_missing_one() -> None:
    """Segments play in GOP order whatever order they arrive in; a hole is waited for, then skipped."""
    index = OutputIndex(window=0, hole_timeout_s=10.0)
    for gop in (2, 0, 3, 1, 5):  # several encoders: any arrival order
        index.add_segment("cam", _seg(gop, arrived=100.0))
    text = index.playlist("cam", now=101.0)
    assert text is not None
    assert _uris(text) == [f"seg_{g:06d}.ts" for g in range(4)]  # GOP 4 not here yet: stop before it
    assert "#EXT-X-ENDLIST" not in text
    # A hole that stays open while later GOPs arrive is skipped, with a discontinuity.
    text = index.playlist("cam", now=111.0)
    assert text is not None
    assert _uris(text)[-1] == "seg_000005.ts"
    assert text.index("#EXT-X-DISCONTINUITY\n") < text.index("seg_000005.ts")


def test_dead_lettered_gop_is_a_gap_and_the_camera_ends() -> None:
    """A dead-lettered GOP is a discontinuity, and an ended camera's playlist is the whole recording."""
    index = OutputIndex(window=2)
    index.add_segment("cam", _seg(0, arrived=time.time()))
    index.add_segment("cam", _seg(2, arrived=time.time()))
    index.add_gap("cam", 1)
    index.set_source("cam", first_gop=0, ended_at_gop=3)
    text = index.playlist("cam")
    assert text is not None
    # Ended: the whole recording, not the live window.
    assert _uris(text) == ["seg_000000.ts", "seg_000002.ts"]
    assert "#EXT-X-DISCONTINUITY" in text
    assert text.rstrip().endswith("#EXT-X-ENDLIST")
    summary = index.summary()[0]
    assert summary["ended"] is True
    assert summary["gaps"] == [1]


def test_live_window_advances_media_sequence() -> None:
    """A live playlist holds the last ``window`` segments and its media sequence moves with them."""
    cam = CameraIndex("cam", {g: _seg(g) for g in range(10)})
    text = render_playlist(cam.entries(0.0, 10.0), window=3, ended=False)
    assert _uris(text) == ["seg_000007.ts", "seg_000008.ts", "seg_000009.ts"]
    assert "#EXT-X-MEDIA-SEQUENCE:7" in text


def test_parse_when() -> None:
    """`export --since/--until` take now, a relative age, epoch seconds or an ISO 8601 time."""
    assert parse_when("now", now=1000.0) == 1000.0
    assert parse_when("15m", now=1000.0) == 100.0
    assert parse_when("1700000000") == 1700000000.0
    assert parse_when("2024-01-01T00:00:00+00:00") == 1704067200.0


# -- against a real pipeline --------------------------------------------------


def _get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        data: bytes = response.read()
        return data


@pytest.mark.integration
def test_hls_served_from_output_stream_and_export(settings: Settings, tmp_path: Path) -> None:
    """Two encoders write to OUTPUT only; the server's playlist is in GOP order, ends,
    and decodes to every frame; export cuts the same recording into an MP4."""
    source = _clip("web_short.mp4", CLIP)
    gops = CLIP.frames // CLIP.gop
    settings = settings.replace(encoder={"fetch_batch": 1})
    system = LocalSystem(settings, Path(settings.local.state_dir), embedded_nats=False)
    with system:
        system.start({Names.ENCODER: 2})
        system.wait_ready()
        server = WebServer(settings, port=0, window=3).start()
        try:
            gateway = system.add_camera("hall", str(source), "fast")
            assert system.wait_for_camera("hall", gateway, stall_timeout=90).complete
            deadline = time.monotonic() + 20
            while True:
                text = _get(server.url + "hall/index.m3u8").decode()
                if "#EXT-X-ENDLIST" in text or time.monotonic() > deadline:
                    break
                time.sleep(0.3)
            assert _uris(text) == [f"seg_{g:06d}.ts" for g in range(gops)]
            assert "#EXT-X-ENDLIST" in text
            local = Path(settings.sink.output_dir) / "hall"
            for gop in range(gops):
                served = _get(server.url + f"hall/seg_{gop:06d}.ts")
                assert served == (local / f"seg_{gop:06d}.ts").read_bytes()
            with av.open(server.url + "hall/index.m3u8") as container:
                assert sum(1 for _ in container.decode(video=0)) == CLIP.frames
            cameras = json.loads(_get(server.url + "api/cameras"))
            assert cameras[0]["camera"] == "hall"
            assert cameras[0]["detections_total"] > 0
            deadline = time.monotonic() + 10.0  # the server reads FP_SOURCES once a second
            while not cameras[0]["source_state"] and time.monotonic() < deadline:
                time.sleep(0.5)
                cameras = json.loads(_get(server.url + "api/cameras"))
            assert cameras[0]["source_state"] in ("running", "ended")  # the tile's badge
            pipeline = json.loads(_get(server.url + "api/pipeline"))
            assert set(pipeline["stages"]) >= {"decoder", "inference", "encoder", "sink"}
            assert "sink-gaps" not in pipeline["stages"]  # a consumer of the sink, not a stage
        finally:
            server.stop()
        result = export(settings, "hall", time.time() - 600, time.time(), tmp_path / "hall.mp4")
        cli = subprocess.run(
            [sys.executable, "-m", "framepipe", "export", "--camera", "hall", "--since", "10m",
             str(tmp_path / "cli.mp4")],
            env={**os.environ, "FRAMEPIPE_NATS__URL": settings.nats.url,
                 "FRAMEPIPE_LOCAL__STATE_DIR": str(tmp_path / "none")},
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert cli.returncode == 0, cli.stderr[-2000:]
        assert f"{gops} segments (GOPs 0..{gops - 1}" in cli.stdout
        # Nothing stored in that interval: a one-line error, not a traceback.
        cli = subprocess.run(
            [sys.executable, "-m", "framepipe", "export", "--camera", "hall", "--since", "2000-01-01",
             "--until", "2000-01-02", str(tmp_path / "none.mp4")],
            env={**os.environ, "FRAMEPIPE_NATS__URL": settings.nats.url,
                 "FRAMEPIPE_LOCAL__STATE_DIR": str(tmp_path / "none")},
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert (cli.returncode, "no recording of hall" in cli.stderr) == (2, True), cli.stderr[-2000:]
    assert (result.segments, result.first_gop, result.last_gop) == (gops, 0, gops - 1)
    with av.open(str(tmp_path / "hall.mp4")) as container:
        assert container.format.name.startswith("mov")
        assert sum(1 for _ in container.decode(video=0)) == CLIP.frames


# -- headless Chromium ----------------------------------------------------------


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        if found := shutil.which(name):
            return found
    return None


class DevTools:
    """The smallest Chrome DevTools Protocol client: one page target, request/response."""

    def __init__(self, ws_url: str) -> None:
        import websocket  # websocket-client

        self.ws = websocket.create_connection(ws_url, timeout=30, suppress_origin=True)
        self.next_id = 0

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            reply = json.loads(self.ws.recv())
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                result: dict[str, Any] = reply["result"]
                return result

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    def close(self) -> None:
        self.ws.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _box_pixels(png: Path, rect: dict[str, float]) -> int:
    """Pixels inside the video element that have the box colour (after H.264 and scaling)."""
    with av.open(str(png)) as container:
        image = next(container.decode(video=0)).to_ndarray(format="rgb24").astype(np.int16)
    x, y, w, h = (round(rect[k]) for k in ("x", "y", "width", "height"))
    region = image[y : y + h, x : x + w]
    distance = np.abs(region - BOX_COLOUR.astype(np.int16)).max(axis=2)
    return int((distance <= 45).sum())


def _iou(a: list[float] | tuple[float, ...], b: list[float] | tuple[float, ...]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union if union > 0 else 0.0


def _box_edge_pixels(png: Path, rect: dict[str, float], box: list[float], source_width: int) -> float:
    """Share of the on-screen outline of ``box`` (source pixels) that has the box colour."""
    with av.open(str(png)) as container:
        image = next(container.decode(video=0)).to_ndarray(format="rgb24").astype(np.int16)
    scale = rect["width"] / source_width
    x1, y1, x2, y2 = (round(rect["x" if i % 2 == 0 else "y"] + v * scale) for i, v in enumerate(box))
    close = np.abs(image - BOX_COLOUR.astype(np.int16)).max(axis=2) <= 45
    hits = total = 0
    for x in range(x1, x2 + 1, 2):  # top and bottom edges, ±3 px for rounding and line width
        for y in (y1, y2):
            total += 1
            hits += bool(close[y - 3 : y + 4, x].any())
    for y in range(y1, y2 + 1, 2):
        for x in (x1, x2):
            total += 1
            hits += bool(close[y, x - 3 : x + 4].any())
    return hits / max(1, total)


@pytest.mark.integration
@pytest.mark.parametrize(
    ("live", "mode"), [("webrtc", "burn-in"), ("webrtc", "overlay"), ("hls", "burn-in"), ("hls", "overlay")]
)
def test_console_plays_annotated_video_in_headless_chromium(
    settings: Settings, tmp_path: Path, live: str, mode: str
) -> None:
    """While a camera streams in real time, the console (started by the supervisor like
    `framepipe demo` does) plays its annotated video in Chromium, over WebRTC by default and
    over HLS when WebRTC is unavailable (here: disabled); the screenshot of the playing video
    shows the detection boxes. In overlay mode the video is the camera's own and the console
    draws the boxes on a canvas (HLS: the sidecar's; WebRTC: those of the session's boxes data
    channel): the boxes of the frame on screen land on the face (the clip's known face box) in
    the screenshot. (The instant view, the console's default, is tests/web/test_instant.py's.)"""
    browser = _chromium()
    if browser is None:
        pytest.skip("Debian chromium is not installed (apt-get install chromium; .ci/run does)")
    if not HLS_JS.is_file():
        pytest.skip("hls.js is not vendored: run `make web-assets` (npm)")
    source = _clip("web_live.mp4", LIVE)
    if live == "hls":
        settings = settings.replace(webrtc={"enabled": False})
    settings = settings.replace(output={"mode": mode})
    system = LocalSystem(settings, Path(settings.local.state_dir), embedded_nats=False)
    chrome: subprocess.Popen[bytes] | None = None
    devtools: DevTools | None = None
    with system:
        system.start()
        system.wait_ready()
        url = system.start_web()
        system.add_camera("door", str(source), "realtime")
        port = _free_port()
        chrome = subprocess.Popen(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'chromium'}", "--autoplay-policy=no-user-gesture-required",
             "--window-size=1280,800", "--hide-scrollbars", f"--remote-debugging-port={port}",
             "--remote-allow-origins=*", url + "?view=annotated"],
            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "chromium.log", "wb"),  # noqa: SIM115
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    targets = json.loads(_get(f"http://127.0.0.1:{port}/json/list"))
                    page = next(t for t in targets if t["type"] == "page")
                    break
                except (OSError, StopIteration):
                    assert time.monotonic() < deadline, "chromium did not open its DevTools port"
                    time.sleep(0.3)
            devtools = DevTools(page["webSocketDebuggerUrl"])
            state: dict[str, Any] = {}
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                state = (
                    devtools.evaluate(
                        "(() => { const v = document.querySelector('video'); if (!v) return {};"
                        " const r = v.getBoundingClientRect();"
                        " return {t: v.currentTime, paused: v.paused, ready: v.readyState, w: v.videoWidth,"
                        " rect: {x: r.x, y: r.y, width: r.width, height: r.height},"
                        " error: v.error && v.error.message,"
                        " mse: MediaSource.isTypeSupported('video/mp4; codecs=\"avc1.64001f\"')}; })()"
                    )
                    or {}
                )
                if state.get("t", 0) > 1.0 and not state.get("paused") and state.get("ready", 0) >= 3:
                    break
                time.sleep(0.5)
            assert state.get("t", 0) > 1.0, f"the video did not play: {state}"
            drawn: dict[str, Any] = {}
            if mode == "overlay":
                while time.monotonic() < deadline + 30:
                    drawn = devtools.evaluate("window.framepipeOverlay.door") or {}
                    if drawn.get("mode") == "overlay" and drawn.get("boxes"):
                        break
                    time.sleep(0.3)
                # Hold the frame: the canvas keeps the boxes of the frame the video shows.
                devtools.evaluate("document.querySelector('video').pause()")
                time.sleep(0.5)
                drawn = devtools.evaluate("window.framepipeOverlay.door") or {}
                assert drawn.get("mode") == "overlay", f"no overlay segment on screen: {drawn}"
            shot = devtools.call("Page.captureScreenshot", format="png")
            png = tmp_path / "console.png"
            png.write_bytes(base64.b64decode(shot["data"]))
            screenshot = Path(str(SCREENSHOT).format(live=f"{live}-{mode}"))
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(png, screenshot)
            green = _box_pixels(png, state["rect"])
            assert green >= 60, f"only {green} box-coloured pixels in the video ({state}); see {screenshot}"
            if mode == "overlay":
                (box, *_) = drawn["boxes"]
                truth = face_box(LIVE, drawn["frame"])
                assert _iou(box, truth) >= 0.5, (drawn, truth)
                outline = _box_edge_pixels(png, state["rect"], box, LIVE.width)
                assert outline >= 0.8, f"{outline:.0%} of the drawn box outline on screen; see {screenshot}"
            summary = devtools.evaluate("document.getElementById('summary').textContent")
            assert "1 camera" in summary
            played = devtools.evaluate("document.querySelector('.cam').dataset.mode")
            assert played == live, f"the console plays over {played}, not {live}"
            # The events timeline (events.js) lists the camera's track events (the sink's).
            events = 0
            deadline = time.monotonic() + 20
            while not events and time.monotonic() < deadline:
                time.sleep(0.5)
                events = devtools.evaluate("document.querySelectorAll('#cam-door ol.events li.event').length")
            assert events, "the console's events timeline stayed empty"
        finally:
            if devtools:
                devtools.close()
            chrome.terminate()
            try:
                chrome.wait(10)
            except subprocess.TimeoutExpired:
                chrome.kill()
                chrome.wait()
