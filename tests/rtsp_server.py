"""A real RTSP server on loopback for the tests (GStreamer's gst-rtsp-server).

Runs under the Debian system python (``/usr/bin/python3``, which has
``python3-gi`` and ``gir1.2-gst-rtsp-server-1.0``), not in the project venv::

    /usr/bin/python3 tests/rtsp_server.py --port 8554 --mount /h264=clip.mp4 --mount /hevc=clip.mkv \
        [--user name:password]

Each mount serves one file (MP4 or Matroska, H.264 or HEVC; or raw RGB frames named
``<name>_<W>x<H>_<fps>.rgb``, as RFC 4175 raw video) without re-encoding, paced in real
time by the server's clock; every client session starts at the beginning (the tests make
the file long by repeating a clip, see ``tests/rtsp.py``). Prints ``READY <port>`` once listening.
"""

from __future__ import annotations

import argparse
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def launch_line(path: str, codec: str) -> str:
    if path.endswith(".rgb"):
        # Raw RGB frames named <name>_<W>x<H>_<fps>.rgb (a radiometric thermal clip, 16-bit
        # values packed high byte red, low byte green), sent as RFC 4175 raw video.
        width, height = path.rsplit("_", 2)[1].split("x")
        fps = path.rsplit("_", 1)[1].removesuffix(".rgb")
        return (
            f'( filesrc location="{path}" ! rawvideoparse width={width} height={height} format=rgb '
            f"framerate={fps}/1 ! rtpvrawpay name=pay0 pt=96 )"
        )
    demux = "matroskademux" if path.endswith(".mkv") else "qtdemux"
    parse, pay = ("h265parse", "rtph265pay") if codec == "hevc" else ("h264parse", "rtph264pay")
    return f'( filesrc location="{path}" ! {demux} ! {parse} config-interval=-1 ! {pay} name=pay0 pt=96 )'


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mount", action="append", default=[], help="/path=file[:codec]")
    parser.add_argument("--user", default="", help="name:password for basic auth")
    args = parser.parse_args()
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    mounts = server.get_mount_points()
    for spec in args.mount:
        path, _, target = spec.partition("=")
        codec = "hevc" if "hevc" in target or "265" in target else "h264"
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(launch_line(target, codec))
        factory.set_shared(False)
        if args.user:
            factory.add_role_from_structure(
                Gst.Structure.new_from_string(
                    "user, media.factory.access=(boolean)true, media.factory.construct=(boolean)true"
                )
            )
        mounts.add_factory(path, factory)
    if args.user:
        name, _, password = args.user.partition(":")
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken.new()
        token.set_string("media.factory.role", "user")
        basic = GstRtspServer.RTSPAuth.make_basic(name, password)
        auth.add_basic(basic, token)
        server.set_auth(auth)
    if server.attach(None) == 0:
        print(f"cannot listen on 127.0.0.1:{args.port}", file=sys.stderr)
        return 1
    loop = GLib.MainLoop()
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, loop.quit)
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGINT, loop.quit)
    print(f"READY {args.port}", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
