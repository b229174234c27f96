"""Test helper: a real RTSP server (GStreamer, system python) on a loopback port.

``RtspServer`` starts ``tests/rtsp_server.py`` under ``/usr/bin/python3`` and can
be killed and restarted on the same port. ``looped_clip`` makes a long file by
repeating a short generated clip (remux, no re-encode), so a client session
lasts as long as a test needs. Tests skip with a reason when the Debian
packages (python3-gi, gir1.2-gst-rtsp-server-1.0, gstreamer1.0-plugins-*) are
missing.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import av
import pytest

from framepipe.media.sample import ClipSpec, make_clip
from tests.helpers import MEDIA

SYSTEM_PYTHON = "/usr/bin/python3"
SERVER_SCRIPT = Path(__file__).with_name("rtsp_server.py")
PROBE = (
    "import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0');"
    "from gi.repository import Gst, GstRtspServer; Gst.init(None);"
    "missing = [e for e in ('qtdemux', 'matroskademux', 'h264parse', 'h265parse', 'rtph264pay', 'rtph265pay')"
    " if Gst.ElementFactory.find(e) is None]; print(' '.join(missing))"
)
APT_HINT = (
    "apt-get install -y gir1.2-gst-rtsp-server-1.0 python3-gi gstreamer1.0-plugins-base "
    "gstreamer1.0-plugins-good gstreamer1.0-plugins-bad"
)


def gst_rtsp_missing() -> str | None:
    """Why the GStreamer RTSP server cannot run here, or None when it can."""
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        return f"{SYSTEM_PYTHON} not found ({APT_HINT})"
    result = subprocess.run(
        [SYSTEM_PYTHON, "-c", PROBE], capture_output=True, text=True, timeout=60, check=False
    )
    if result.returncode != 0:
        return f"GStreamer RTSP server bindings missing ({APT_HINT}): {result.stderr.strip()[-200:]}"
    if result.stdout.strip():
        return f"GStreamer elements missing: {result.stdout.strip()} ({APT_HINT})"
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def looped_clip(name: str, spec: ClipSpec, repeat: int) -> Path:
    """``spec`` encoded once, then remuxed ``repeat`` times back to back into one file."""
    path = MEDIA / name
    if path.is_file():
        return path
    base = make_clip(MEDIA / f"base-{name}", spec)
    tmp = path.with_name(path.name + ".partial" + path.suffix)
    with av.open(str(base)) as src, av.open(str(tmp), "w") as dst:
        in_stream = src.streams.video[0]
        out_stream = dst.add_stream_from_template(in_stream)
        packets = [p for p in src.demux(in_stream) if p.size]
        step = max(p.pts for p in packets if p.pts is not None) - min(
            p.pts for p in packets if p.pts is not None
        )
        step += packets[1].duration or (packets[1].pts - packets[0].pts if len(packets) > 1 else 1) or 1
        for n in range(repeat):
            for packet in packets:
                copy = av.Packet(bytes(packet))
                copy.pts = None if packet.pts is None else packet.pts + n * step
                copy.dts = None if packet.dts is None else packet.dts + n * step
                copy.is_keyframe = packet.is_keyframe
                copy.time_base = packet.time_base
                copy.stream = out_stream
                dst.mux(copy)
    tmp.replace(path)
    return path


class RtspServer:
    """``rtsp://127.0.0.1:<port>/<mount>`` for each mount; stop/start keep the port."""

    def __init__(self, mounts: dict[str, Path], log_file: Path, user: str = "") -> None:
        self.mounts = mounts
        self.user = user
        self.port = free_port()
        self.log_file = log_file
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, mount: str, credentials: str = "") -> str:
        auth = f"{credentials}@" if credentials else ""
        return f"rtsp://{auth}127.0.0.1:{self.port}/{mount}"

    def start(self, timeout: float = 20.0) -> RtspServer:
        argv = [SYSTEM_PYTHON, str(SERVER_SCRIPT), "--port", str(self.port)]
        for mount, path in self.mounts.items():
            argv += ["--mount", f"/{mount}={path}"]
        if self.user:
            argv += ["--user", self.user]
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        out = open(self.log_file, "ab")  # noqa: SIM115 - the child owns it
        # A clean environment: the venv's variables must not leak into the system python.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))}
        self.process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
        out.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"RTSP server exited: {self.log_file.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"RTSP server did not listen on {self.port}")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
        self.process = None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None


def require_gst() -> None:
    reason = gst_rtsp_missing()
    if reason:
        pytest.skip(reason)
