"""What the FRAMES batch's size costs the bus, for each layout of its pixels.

One 720p30 GOP at ``detect_fps = 5`` sends inference one FRAMES batch of five frames for
the 192² model; at 16:9 a letterboxed square's black bars are 44 % of it. This bench sends
batches of each layout through the path the decoder and inference really take, and times
it in CPU: the decoder's publish with its de-duplication id and wait for the JetStream ack,
inference's ``fetch(1)``, the envelope's decode, the pixels as the model's input (a picture
batch padded into the square, as the stage does), and ``ack_sync``, on the real FRAMES
work queue (file storage) of a real nats-server. CPU ms per batch of this process (both
clients) and of the server, best of ``--repeats`` passes, the layouts alternated. The same
batch with no pixels is the floor: what a message costs whatever it carries.

Layouts (the envelope's fields as the decoder sets them; 30 frames, 5 selected):

- ``letterboxed-rgb``: ``decoder.frames_layout = "letterbox"``, (5, 192, 192, 3);
- ``picture-rgb``: the default ``"picture"``, the picture without its bars,
  ``picture = (108, 192)``;
- ``picture-yuv420``: the picture in the source's own 4:2:0 layout, 1.5 bytes a pixel
  (sent here as (5, 162, 192, 1), the same bytes, and not converted to RGB at the end).

The first two are what framepipe sends; the third is measured to size a further change of
FRAMES' wire format (inference would then convert colour too). Not part of CI.
Writes ``bench/results/frames_bytes.json``.

    python -m bench.frames_bytes [--batches 150] [--repeats 5]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from nats.js import JetStreamContext

from bench.common import RESULTS, cpu_seconds, ratio, write_result
from framepipe.core import bus, messages
from framepipe.core.bus import setup_topology
from framepipe.core.messages import FrameBatch
from framepipe.core.settings import Settings
from framepipe.core.topology import Names, consumer_spec
from framepipe.local.natsserver import NatsServer
from framepipe.media.letterbox import place

#: name → the (n, h, w, c) shape of the pixels the batch carries.
LAYOUTS: dict[str, tuple[int, int, int, int]] = {
    "letterboxed-rgb": (5, 192, 192, 3),
    "picture-rgb": (5, 108, 192, 3),
    "picture-yuv420": (5, 162, 192, 1),
    "no-pixels": (0, 192, 192, 3),
}
#: the layouts the decoder makes as pictures (``FrameBatch.picture``), padded by inference.
PICTURES = {"picture-rgb"}
SIZE = 192
GOP_FRAMES = 30


def batch(gop: int, name: str) -> FrameBatch:
    """One GOP's batch as the decoder builds it at detect_fps 5: every 6th of 30 frames."""
    n, h, w, c = LAYOUTS[name]
    picture = (h, w) if name in PICTURES else (0, 0)
    every = GOP_FRAMES // n if n else GOP_FRAMES + 1
    selected = tuple(i % every == 0 for i in range(GOP_FRAMES)) if n else ()
    return FrameBatch(
        camera="bench",
        gop=gop,
        part=0,
        parts=1,
        video_seq=gop + 1,
        frame_indices=tuple(range(gop * GOP_FRAMES, (gop + 1) * GOP_FRAMES)) if n else (),
        pts=tuple(3000 * i for i in range(GOP_FRAMES)) if n else (),
        source_size=(1280, 720),
        scale=0.15,
        pad=(0, 42),
        shape=(n, SIZE, SIZE, c) if name in PICTURES else (n, h, w, c),
        picture=picture,
        pixels=bytes(range(256)) * (n * h * w * c // 256) + bytes(n * h * w * c % 256),
        frame_offset=gop * GOP_FRAMES,
        gop_frames=GOP_FRAMES,
        time_base=(1, 90000),
        selected=selected if selected and not all(selected) else (),
    )


async def _one_pass(
    js: JetStreamContext,
    sub: JetStreamContext.PullSubscription,
    name: str,
    first: int,
    count: int,
) -> int:
    subject = Names.subject(Names.FRAMES, "bench")
    for gop in range(first, first + count):
        headers, body = messages.encode(batch(gop, name))
        await bus.publish(js, subject, body, headers, Names.msg_id("bench", gop, "decoder"))
        (msg,) = await sub.fetch(1, timeout=10.0)
        received = messages.decode(msg.headers, msg.data, FrameBatch)
        if received.gop != gop:
            raise RuntimeError(f"fetched GOP {received.gop}, published {gop}")
        frames = np.frombuffer(received.pixels, dtype=np.uint8).reshape(received.pixel_shape)
        if received.picture != (0, 0):
            place(frames, SIZE, received.pad)
        await msg.ack_sync(timeout=10.0)
    return count


async def _costs(
    settings: Settings, server_pid: int, count: int, repeats: int
) -> dict[str, dict[str, float]]:
    nc = await bus.connect(settings, "bench-frames-bytes")
    js = nc.jetstream(timeout=10.0)
    spec = consumer_spec(Names.INFERENCE)
    sub = await js.pull_subscribe_bind(durable=spec.durable, stream=spec.stream)
    best: dict[str, dict[str, float]] = {name: {} for name in LAYOUTS}
    gop = 0
    try:
        await _one_pass(js, sub, "letterboxed-rgb", gop, 20)  # warm: connection, first blocks
        gop += 20
        for _ in range(repeats):
            for name in LAYOUTS:
                client, served = time.process_time(), cpu_seconds(server_pid)
                done = await _one_pass(js, sub, name, gop, count)
                gop += done
                spent = {
                    "client_ms": (time.process_time() - client) * 1000 / done,
                    "server_ms": (cpu_seconds(server_pid) - served) * 1000 / done,
                }
                for key, ms in spent.items():
                    best[name][key] = round(min(ms, best[name].get(key, ms)), 4)
    finally:
        await nc.close()
    for name, row in best.items():
        row["total_ms"] = round(row["client_ms"] + row["server_ms"], 4)
        row["body_bytes"] = len(messages.encode(batch(0, name))[1])
    return best


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--batches", type=int, default=150, help="batches per layout and pass")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS / "frames_bytes.json")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="fp-frames-bytes-") as tmp:
        server = NatsServer(store_dir=Path(tmp) / "jetstream").start(log_file=Path(tmp) / "nats.log")
        try:
            settings = Settings().replace(nats={"url": server.url})
            asyncio.run(setup_topology(settings))
            assert server.process is not None
            rows = asyncio.run(_costs(settings, server.process.pid, args.batches, args.repeats))
        finally:
            server.stop()
    today = rows["letterboxed-rgb"]["total_ms"]
    for row in rows.values():
        row["ratio_to_letterboxed"] = ratio(row["total_ms"], today)
        row["saves_ms_per_gop"] = round(today - row["total_ms"], 4)
    result = {
        "benchmark": "frames_bytes",
        "params": {
            "batches": args.batches,
            "repeats": args.repeats,
            "storage": "file",
            "stream": Names.FRAMES,
        },
        "cpu_ms_per_batch": rows,
        "summary": {
            name: f"{row['body_bytes'] / 1000:.0f} kB: {row['total_ms']} ms ({row['ratio_to_letterboxed']}x)"
            for name, row in rows.items()
        },
    }
    return write_result(result, args.out, "python -m bench.frames_bytes " + " ".join(argv or sys.argv[1:]))


if __name__ == "__main__":
    main()
