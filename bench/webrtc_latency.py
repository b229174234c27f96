"""Glass-to-glass latency of the live views: instant and annotated WebRTC (WHEP) against HLS, same run.

The whole pipeline runs as in ``framepipe demo`` (every stage its own process, a
real nats-server, ``framepipe web`` started by the supervisor); a gateway plays a
generated clip as a live camera (``pacing=realtime``) whose frames carry their
number as a block code (``framepipe.media.stamp``). Chromium opens the console
three times: ``?view=instant`` (the camera's own packets as the gateway reads them,
the console's default), ``?view=annotated`` (the pipeline's output over WebRTC) and
``?live=hls`` (the HLS fallback, the baseline).
In each page a ``requestVideoFrameCallback`` reads the code of every frame shown
and notes when it is displayed (``expectedDisplayTime`` on the wall clock).

Glass time of a frame = its GOP's ``captured_at`` (stamped by the gateway when it
publishes the GOP, i.e. when the GOP's last frame was "captured") minus the
frame's distance from that last frame (pts). Latency = display − glass, same
machine, same clock. (The gateway releases each packet of a file played in real time
at that same time, ``stages/gateway/live.py``, so for the instant view this is when
the packet left the "camera".) A GOP is cut only when the next keyframe arrives, so
any path that starts from the gateway's GOPs carries up to one GOP of that wait;
the annotated path also waits for the whole GOP to be processed; the instant path
waits for neither.

    python -m bench.webrtc_latency [--quick] [--seconds S] [--catch-up-speed X] [--out FILE]

Writes ``bench/results/webrtc_latency.json``: p50/p95 per path and the ratios to HLS.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import RESULTS, bench_settings, clip, ratio, write_result
from bench.stage_breakdown import breakdown
from framepipe.core import bus, messages
from framepipe.core.settings import Settings
from framepipe.core.settings.runtime import WebRtcSettings
from framepipe.core.topology import Names
from framepipe.local.natsserver import NatsServer
from framepipe.local.supervisor import LocalSystem
from framepipe.media.sample import ClipSpec

#: seconds the started browser is left to finish its own start-up before the camera starts
BROWSER_SETTLE_S = 3.0

# Reads the stamp of every displayed frame exactly as framepipe.media.stamp.read_stamp does.
PROBE_JS = """
(() => {
  if (window.__fpSamples) return true;
  window.__fpSamples = [];
  const crc4 = (value) => { let crc = 0; for (let i = 11; i >= 0; i--) {
    const top = ((crc >> 3) & 1) ^ ((value >> i) & 1);
    crc = ((crc << 1) & 15) ^ (top ? 3 : 0); } return crc; };
  const canvas = document.createElement("canvas");
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  const arm = () => {
    const video = document.querySelector("video");
    if (!video || !video.requestVideoFrameCallback) { setTimeout(arm, 100); return; }
    const onFrame = (now, meta) => {
      const w = meta.width, h = meta.height;
      if (w && h) {
        canvas.width = w; canvas.height = h; ctx.drawImage(video, 0, 0, w, h);
        const size = Math.max(8, Math.floor(h / 40)), inner = Math.max(1, Math.floor(size / 4));
        const px = ctx.getImageData(0, h - size, 16 * size, size).data;
        let word = 0;
        for (let i = 0; i < 16; i++) {
          let sum = 0, n = 0;
          for (let y = inner; y < size - inner; y++)
            for (let x = i * size + inner; x < (i + 1) * size - inner; x++) {
              const k = (y * 16 * size + x) * 4; sum += px[k] + px[k + 1] + px[k + 2]; n += 3;
            }
          word = (word << 1) | (sum / n > 127.5 ? 1 : 0);
        }
        const value = word >> 4;
        const shown = performance.timeOrigin + meta.expectedDisplayTime;
        if (crc4(value) === (word & 15)) window.__fpSamples.push([value, shown]);
      }
      video.requestVideoFrameCallback(onFrame);
    };
    video.requestVideoFrameCallback(onFrame);
  };
  arm();
  return true;
})()
"""

#: the annotated (burn-in) path's stages after the gateway, in order.
PIPELINE = (Names.DECODER, Names.INFERENCE, Names.ANALYSIS, Names.ENCODER)


class Page:
    """One page target over the Chrome DevTools Protocol (request/response only)."""

    def __init__(self, ws_url: str) -> None:
        import websocket  # websocket-client

        self.ws = websocket.create_connection(ws_url, timeout=30, suppress_origin=True)
        self.next_id = 0

    def evaluate(self, expression: str) -> Any:
        self.next_id += 1
        self.ws.send(
            json.dumps(
                {
                    "id": self.next_id,
                    "method": "Runtime.evaluate",
                    "params": {"expression": expression, "returnByValue": True},
                }
            )
        )
        while True:
            reply = json.loads(self.ws.recv())
            if reply.get("id") == self.next_id:
                return reply.get("result", {}).get("result", {}).get("value")

    def close(self) -> None:
        self.ws.close()


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as response:
        data: bytes = response.read()
        return data


async def _glass_times(settings: Settings, camera: str) -> tuple[dict[int, float], dict[int, float]]:
    """Frame number → wall time its frame was "captured", and GOP → captured_at, from VIDEO."""
    nc = await bus.connect(settings, "bench-video", retry_initial=False)
    try:
        js = nc.jetstream(timeout=10.0)
        info = await js.stream_info(Names.VIDEO)
        out: dict[int, float] = {}
        captured: dict[int, float] = {}
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            raw = await js.get_msg(Names.VIDEO, seq)
            gop = messages.decode(raw.headers, raw.data or b"", messages.GopMessage)
            if gop.camera != camera:
                continue
            base = gop.time_base[0] / gop.time_base[1]
            pts = sorted(gop.pts)
            captured[gop.gop] = gop.captured_at
            for k, p in enumerate(pts):
                out[gop.frame_offset + k] = gop.captured_at - (pts[-1] - p) * base
        return out, captured
    finally:
        await nc.close()


def _percentiles(samples: list[float]) -> dict[str, float]:
    if not samples:
        return {"n": 0, "p50": 0.0, "p95": 0.0, "min": 0.0, "max": 0.0}
    a = np.asarray(samples)
    return {
        "n": int(a.size),
        "p50": round(float(np.percentile(a, 50)), 3),
        "p95": round(float(np.percentile(a, 95)), 3),
        "min": round(float(a.min()), 3),
        "max": round(float(a.max()), 3),
    }


def run(seconds: float, gop: int, fps: int, workdir: Path, catch_up_speed: float) -> dict[str, Any]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        raise SystemExit("needs Debian chromium (apt-get install chromium)")
    spec = ClipSpec(width=640, height=360, fps=fps, seconds=seconds, gop=gop, bframes=0, stamp=True)
    source = clip(spec)
    server = NatsServer(store_dir=workdir / "jetstream").start(log_file=workdir / "nats.log")
    settings = bench_settings(
        nats={"url": server.url},
        sink={"output_dir": str(workdir / "out")},
        local={"state_dir": str(workdir / "st")},
        webrtc={"catch_up_speed": catch_up_speed},
    )
    paths = {"instant": "?view=instant", "webrtc": "?view=annotated", "hls": "?live=hls"}
    samples: dict[str, list[list[float]]] = {}
    stages: dict[str, Any] = {}
    server_delays: list[float] = []
    instant_delays: list[float] = []
    chrome: subprocess.Popen[bytes] | None = None
    try:
        system = LocalSystem(settings, workdir / "st", embedded_nats=False)
        with system:
            system.start()
            system.wait_ready()
            url = system.start_web()
            # Chromium starts (and settles) before the camera does: in use the browser runs on
            # the operator's machine, and its start-up on these same cores was being measured as
            # the first GOPs' pipeline delay (stop 26: up to 2.1 s to reach OUTPUT meanwhile).
            port = _free_port()
            chrome = subprocess.Popen(
                [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
                 "--disable-backgrounding-occluded-windows", f"--user-data-dir={workdir / 'chromium'}",
                 "--autoplay-policy=no-user-gesture-required", "--window-size=1280,800",
                 f"--remote-debugging-port={port}", "--remote-allow-origins=*",
                 "about:blank"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            for _ in range(len(paths) - 1):
                _open_tab(port, "about:blank")
            blank = _pages(port, len(paths))
            probes = {name: Page(ws) for name, (_, ws) in zip(paths, blank, strict=False)}
            for page in probes.values():  # each page's renderer is up before the clock starts
                page.evaluate("document.readyState")
            time.sleep(BROWSER_SETTLE_S)
            system.add_camera("bench", str(source), "realtime")
            deadline = time.monotonic() + 60
            while b'"bench"' not in _get(url + "api/cameras"):  # the console lists cameras with segments
                if time.monotonic() > deadline:
                    raise SystemExit("no segment of the bench camera in 60 s")
                time.sleep(0.2)
            for name, page in probes.items():
                page.evaluate(f"location.href = {json.dumps(url + paths[name])}")
            time.sleep(0.5)
            for page in probes.values():
                page.evaluate(PROBE_JS)
            end = time.monotonic() + seconds + 15
            while time.monotonic() < end:
                time.sleep(1.0)
                for page in probes.values():
                    page.evaluate(PROBE_JS)  # re-arms after a reload; no-op otherwise
                for camera in json.loads(_get(url + "api/cameras")):
                    delay = (camera.get("webrtc") or {}).get("delay_s")
                    if delay is not None:
                        server_delays.append(delay)
                    instant = ((camera.get("webrtc") or {}).get("instant") or {}).get("delay_s")
                    if instant is not None:
                        instant_delays.append(instant)
            for name, page in probes.items():
                samples[name] = page.evaluate("window.__fpSamples || []")
                page.close()
            glass, captured = asyncio.run(_glass_times(settings, "bench"))
            stages = breakdown(sorted((workdir / "st" / "logs").glob("*.log")), captured, "bench", PIPELINE)
    finally:
        if chrome is not None:
            chrome.terminate()
            chrome.wait(10)
        server.stop()
    result: dict[str, Any] = {
        "params": {"seconds": seconds, "gop": gop, "fps": fps, "catch_up_speed": catch_up_speed},
        "paths": {},
        # The web server's own capture → send delay (median of its recent frames), sampled each second.
        "server_capture_to_send_s": _percentiles(server_delays),
        # The instant view: gateway read → web server sent, per packet (median of the recent ones).
        "instant_read_to_send_s": _percentiles(instant_delays),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        # captured_at → each stage's start (wait) and end (work), per GOP (bench/stage_breakdown.py)
        "stages": stages,
    }
    for name, rows in samples.items():
        first_shown: dict[int, float] = {}
        for value, shown_ms in rows:
            first_shown.setdefault(int(value), shown_ms / 1000.0)
        latencies = [shown - glass[n] for n, shown in first_shown.items() if n in glass]
        later = [shown - glass[n] for n, shown in first_shown.items() if n in glass and n >= spec.frames // 2]
        result["paths"][name] = {
            "latency_s": _percentiles(latencies),
            # the camera's second half only: what a view settles at, start-up left out
            "second_half_latency_s": _percentiles(later),
            "frames_shown": len(first_shown),
            "frames_total": spec.frames,
        }
    webrtc = result["paths"].get("webrtc", {}).get("latency_s", {})
    instant = result["paths"].get("instant", {}).get("latency_s", {})
    hls = result["paths"].get("hls", {}).get("latency_s", {})
    gop_s = gop / fps
    result["summary"] = {
        "gop_s": gop_s,
        "instant_p50_s": instant.get("p50"),
        "instant_p95_s": instant.get("p95"),
        "instant_over_hls_p50": ratio(instant.get("p50", 0.0), hls.get("p50", 0.0)),
        "instant_over_annotated_p50": ratio(instant.get("p50", 0.0), webrtc.get("p50", 0.0)),
        "instant_p95_goal_s": 0.5,
        "instant_meets_goal": bool(instant.get("n") and instant["p95"] < 0.5),
        "webrtc_p50_s": webrtc.get("p50"),
        "webrtc_p95_s": webrtc.get("p95"),
        "hls_p50_s": hls.get("p50"),
        "hls_p95_s": hls.get("p95"),
        "server_capture_to_send_p50_s": result["server_capture_to_send_s"]["p50"],
        # what the WebRTC leg (network, jitter buffer, decode, paint) adds to the server's delay
        "webrtc_added_by_browser_p50_s": round(
            webrtc.get("p50", 0.0) - result["server_capture_to_send_s"]["p50"], 3
        ),
        "webrtc_over_hls_p50": ratio(webrtc.get("p50", 0.0), hls.get("p50", 0.0)),
        "webrtc_p95_goal_s": gop_s + 1.0,
        "webrtc_meets_goal": bool(webrtc.get("n") and webrtc["p95"] < gop_s + 1.0),
    }
    return result


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _open_tab(port: int, url: str) -> None:
    """A second page in a window of its own: a background tab renders no frames."""
    import websocket  # websocket-client

    deadline = time.monotonic() + 30
    while True:
        try:
            browser_ws = json.loads(_get(f"http://127.0.0.1:{port}/json/version"))["webSocketDebuggerUrl"]
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)
    ws = websocket.create_connection(browser_ws, timeout=30, suppress_origin=True)
    try:
        ws.send(
            json.dumps({"id": 1, "method": "Target.createTarget", "params": {"url": url, "newWindow": True}})
        )
        while json.loads(ws.recv()).get("id") != 1:
            pass
    finally:
        ws.close()


def _pages(port: int, count: int) -> list[tuple[str, str]]:
    deadline = time.monotonic() + 30
    while True:
        try:
            targets = json.loads(_get(f"http://127.0.0.1:{port}/json/list"))
            pages = [(t["url"], t["webSocketDebuggerUrl"]) for t in targets if t["type"] == "page"]
            if len(pages) >= count:
                return pages
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit("chromium did not open its pages")
        time.sleep(0.3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a 12 s camera")
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--gop", type=int, default=25, help="frames per GOP")
    parser.add_argument("--fps", type=int, default=25)
    default_speed = WebRtcSettings().catch_up_speed
    parser.add_argument(
        "--catch-up-speed", type=float, default=default_speed, help="webrtc.catch_up_speed (1.0: off)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "webrtc_latency.json")
    args = parser.parse_args()
    seconds = 12.0 if args.quick else args.seconds
    with tempfile.TemporaryDirectory(prefix="fp-webrtc-bench-") as tmp:
        result = run(seconds, args.gop, args.fps, Path(tmp), args.catch_up_speed)
    command = "python -m bench.webrtc_latency" + " --quick" * args.quick
    if args.seconds != parser.get_default("seconds"):
        command += f" --seconds {args.seconds:g}"
    if args.catch_up_speed != default_speed:
        command += f" --catch-up-speed {args.catch_up_speed:g}"
    write_result(result, args.out, command)


if __name__ == "__main__":
    main()
