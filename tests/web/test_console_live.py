"""The console's live tiles: listed at the gateway's registration, the burn-in live rendition's
button for on-demand cameras, the B-frames warning, and HLS after a WebRTC session that played
drops and its re-offers fail (real nats-server, real gateway, real headless Chromium)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import pytest
from nats.js import JetStreamContext

from framepipe.core.settings import Settings
from framepipe.core.viewers import is_watched, viewers_bucket
from framepipe.media.reorder import BFRAMES_ADVICE, ReorderDetector
from framepipe.media.sample import ClipSpec, make_clip
from framepipe.stages.gateway import Gateway
from framepipe.stages.output_modes import set_mode
from framepipe.web.server import WebServer
from tests.helpers import MEDIA
from tests.web.test_instant import _register
from tests.web.test_web import DevTools, _chromium, _free_port, _get

#: B-frames on: what a camera left at its "High profile" default sends.
BFRAMES = ClipSpec(width=320, height=180, fps=25, seconds=12.0, gop=25, bframes=2)
NO_BFRAMES = ClipSpec(width=320, height=180, fps=25, seconds=2.0, gop=25, bframes=0)


def _clip(spec: ClipSpec, name: str) -> Path:
    path = MEDIA / name
    if not path.is_file():
        make_clip(path, spec)
    return path


def _pts_in_decode_order(path: Path) -> list[tuple[int, bool]]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return [
            (int(p.pts), bool(p.is_keyframe)) for p in container.demux(stream) if p.size and p.pts is not None
        ]


class TestReorderDetector:
    def test_b_frames_are_seen_once_and_a_stream_without_them_never(self) -> None:
        """Real H.264 with B-frames: reordering found, said once; without B-frames: never."""
        detector = ReorderDetector()
        firsts = [
            detector.see(pts, key) for pts, key in _pts_in_decode_order(_clip(BFRAMES, "console_bframes.mp4"))
        ]
        assert sum(firsts) == 1
        assert detector.reordered
        plain = ReorderDetector()
        assert not any(
            plain.see(pts, key) for pts, key in _pts_in_decode_order(_clip(NO_BFRAMES, "console_ip.mp4"))
        )
        assert not plain.reordered

    def test_a_jump_back_at_a_keyframe_is_no_b_frame(self) -> None:
        """A looped file or a reconnect starts again at a keyframe with lower pts: no alarm."""
        detector = ReorderDetector()
        seen = [
            detector.see(pts, key) for pts, key in [(0, True), (1, False), (2, False), (0, True), (1, False)]
        ]
        assert not any(seen)
        assert not detector.reordered


def _state_js(camera: str) -> str:
    return f"""(() => {{
  const box = document.querySelector('#cam-{camera}');
  if (!box) return null;
  const button = box.querySelector('.burn-in'), warning = box.querySelector('.warning');
  return {{mode: box.dataset.mode, rendition: box.dataset.rendition, note: box.dataset.note,
          button: !button.hidden, warning: warning.hidden ? '' : warning.textContent,
          dets: box.querySelector('.dets').textContent}};
}})()"""


async def _until(
    devtools: DevTools, camera: str, check: Callable[[dict[str, Any]], bool], timeout: float, what: str
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    state: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        state = await asyncio.to_thread(devtools.evaluate, _state_js(camera))
        if state and check(state):
            return state
        await asyncio.sleep(0.25)
    raise AssertionError(f"{what}: the tile was {state}")


async def _open_page(port: int) -> DevTools:
    deadline = time.monotonic() + 30
    while True:
        try:
            targets = json.loads(await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/json/list"))
            page = next(t for t in targets if t["type"] == "page")
            return DevTools(page["webSocketDebuggerUrl"])
        except (OSError, StopIteration):
            assert time.monotonic() < deadline, "chromium did not open its DevTools port"
            await asyncio.sleep(0.3)


@pytest.mark.integration
async def test_console_tile_lists_warns_toggles_burn_in_and_falls_back_to_hls_in_headless_chromium(
    js: JetStreamContext, nats_settings: Settings, tmp_path: Path
) -> None:
    """A registered on-demand camera gets a tile before any segment, with the burn-in live button;
    its B-frames (a real gateway playing a real clip) show the one-line warning; the button plays
    live.m3u8 (the camera becomes watched) and back; when the server restarts without WebRTC,
    the tile's re-offers fail and it plays HLS, saying why."""
    browser = _chromium()
    if browser is None:
        pytest.skip("Debian chromium is not installed (apt-get install chromium; .ci/run does)")
    await _register(js, "door")  # as the gateway does at its start; no segment anywhere
    await set_mode(js, "door", "on-demand")
    web = await asyncio.to_thread(lambda: WebServer(nats_settings, port=0).start())
    web_port = web.port
    port = _free_port()
    chrome = subprocess.Popen(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'chromium'}", "--autoplay-policy=no-user-gesture-required",
         "--window-size=1280,800", f"--remote-debugging-port={port}", "--remote-allow-origins=*", web.url],
        stdout=subprocess.DEVNULL, stderr=open(tmp_path / "chromium.log", "wb"),  # noqa: SIM115
    )  # fmt: skip
    devtools: DevTools | None = None
    camera: asyncio.Future[Any] | None = None
    try:
        devtools = await _open_page(port)
        # 1. Listed from FP_SOURCES, playing over WebRTC, with the burn-in button (on-demand).
        listed = await _until(
            devtools, "door", lambda s: s["mode"] == "webrtc" and s["button"], 20, "no tile"
        )
        assert "0 segments" in listed["dets"]
        assert not listed["warning"]
        # 2. The camera sends B-frames: the tile says what to change on the camera.
        gateway = Gateway(nats_settings.replace(gateway={"metrics_port": -1}), "door",
                          str(_clip(BFRAMES, "console_bframes.mp4")), "realtime")  # fmt: skip
        camera = asyncio.ensure_future(gateway.run())
        warned = await _until(devtools, "door", lambda s: bool(s["warning"]), 15, "no B-frames warning")
        assert BFRAMES_ADVICE in warned["warning"]
        assert gateway.live is not None
        assert gateway.live.reorder.reordered
        # 3. The button: live.m3u8 over HLS, which marks the camera watched; and back.
        viewers = await viewers_bucket(js)
        assert not await is_watched(viewers, "door")
        await asyncio.to_thread(devtools.evaluate, "document.querySelector('#cam-door .burn-in').click()")
        await _until(
            devtools, "door", lambda s: s["rendition"] == "live" and s["mode"] == "hls", 10, "no live"
        )
        deadline = time.monotonic() + 10
        while not await is_watched(viewers, "door"):
            assert time.monotonic() < deadline, "live.m3u8 was never requested"
            await asyncio.sleep(0.2)
        await asyncio.to_thread(devtools.evaluate, "document.querySelector('#cam-door .burn-in').click()")
        await _until(
            devtools, "door", lambda s: s["rendition"] == "" and s["mode"] == "webrtc", 10, "not back"
        )
        assert web.whep is not None
        deadline = time.monotonic() + 20
        while not any(s.pc.connectionState == "connected" for s in list(web.whep.sessions.values())):
            if time.monotonic() > deadline:
                state = await asyncio.to_thread(devtools.evaluate, _state_js("door"))
                raise AssertionError(f"the console opened no new WebRTC session: the tile was {state}")
            await asyncio.sleep(0.2)
        # 4. The session drops (the server restarts, now without WebRTC): re-offers fail → HLS.
        await asyncio.to_thread(web.stop)
        off = nats_settings.replace(webrtc={"enabled": False})
        web = await asyncio.to_thread(lambda: WebServer(off, port=web_port).start())
        fell = await _until(devtools, "door", lambda s: s["mode"] == "hls", 60, "no fallback to HLS")
        assert "re-offers failed" in fell["note"], fell
        assert "WebRTC is disabled" in fell["note"], fell
        assert "re-offers failed" in fell["dets"]  # said in the tile's text too
    finally:
        if camera is not None:
            camera.cancel()
        if devtools is not None:
            devtools.close()
        chrome.terminate()
        chrome.wait(10)
        await asyncio.to_thread(web.stop)
