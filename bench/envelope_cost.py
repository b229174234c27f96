"""What the wire envelope costs a camera per GOP: encode and decode of each message it sends.

One 720p30 GOP at ``detect_fps = 5`` makes five messages: VIDEO's GOP (decoded twice, by
the decoder and by the analysis stage's remux), the frames the model sees, DETECTIONS,
ANALYZE and, in overlay mode, the segment. Each is encoded and decoded with
:mod:`framepipe.core.messages` in this process, the GOP from a real encoded clip, and timed
beside the floor the bare library allows: ``msgpack`` (or ``json``) packing and unpacking
the same map, with no envelope, no type checks and no dataclass. Best of ``--repeats``
runs of ``--loops`` each; CPU microseconds per message.

    python -m bench.envelope_cost [--loops 200] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack

from bench.common import RESULTS, clip, load_gops, write_result
from framepipe.core import messages
from framepipe.core.messages import (
    Detection,
    DetectionsMessage,
    EncodeItem,
    FrameBatch,
    FrameDetections,
    Message,
    SegmentMessage,
)
from framepipe.media.sample import ClipSpec

FRAMES = 30
SELECTED = 5  # detect_fps 5 of 30
MODEL_SIZE = 192


def gop_messages() -> dict[str, tuple[Message, int]]:
    """Each kind's message for one GOP, with how many times a GOP's one is decoded."""
    gop = load_gops(clip(ClipSpec.named("720p", gop=FRAMES, seconds=2.0)))[0]
    face = Detection((410.5, 180.25, 530.75, 330.5), 0.93)
    frames = tuple(FrameDetections(gop.frame_offset + i, gop.pts[i], (face,)) for i in range(FRAMES))
    analysed = Detection(face.box, face.score, track=0, identity="unknown")
    named = tuple(FrameDetections(f.frame, f.pts, (analysed,)) for f in frames)
    selected = tuple(i % (FRAMES // SELECTED) == 0 for i in range(FRAMES))
    batch = FrameBatch(
        camera=gop.camera, gop=gop.gop, part=0, parts=1, video_seq=1,
        frame_indices=tuple(f.frame for f in frames), pts=gop.pts, source_size=(gop.width, gop.height),
        scale=0.15, pad=(0, 42), shape=(SELECTED, MODEL_SIZE, MODEL_SIZE, 3),
        pixels=bytes(SELECTED * MODEL_SIZE * MODEL_SIZE * 3), gop_frames=FRAMES,
        time_base=gop.time_base, selected=selected,
    )  # fmt: skip
    segment = SegmentMessage(
        camera=gop.camera, gop=gop.gop, container="mpegts", duration_s=1.0, frames=named,
        data=b"".join(gop.packets), mode="overlay", time_base=gop.time_base, video_seq=1,
    )  # fmt: skip
    return {
        "gop (VIDEO)": (gop, 2),
        "frames (FRAMES)": (batch, 1),
        "detections (DETECTIONS, JSON)": (
            DetectionsMessage(gop.camera, gop.gop, 0, 1, frames, "blazeface"),
            1,
        ),
        "encode item (ANALYZE)": (EncodeItem(gop.camera, gop.gop, 1, frames), 1),
        "segment (OUTPUT)": (segment, 1),
    }


def best_us(work: Callable[[], object], loops: int, repeats: int) -> float:
    """CPU microseconds of one call of ``work``, best of ``repeats`` runs of ``loops`` calls."""
    best = float("inf")
    for _ in range(repeats):
        started = time.process_time()
        for _ in range(loops):
            work()
        best = min(best, (time.process_time() - started) / loops)
    return best * 1e6


def floor_codec(message: Message) -> tuple[Callable[[], object], Callable[[], object]]:
    """Pack and unpack of the message's own map by the bare library (its tail left out)."""
    wire = message.to_wire()
    if message.TAIL is not None:
        wire.pop(message.TAIL)
    if message.FORMAT == "json":
        text = json.dumps(wire, separators=(",", ":")).encode()
        return (lambda: json.dumps(wire, separators=(",", ":")).encode()), (lambda: json.loads(text))
    packed = msgpack.packb(wire, use_bin_type=True)
    return (lambda: msgpack.packb(wire, use_bin_type=True)), (lambda: msgpack.unpackb(packed, raw=False))


def time_message(message: Message, loops: int, repeats: int) -> dict[str, float]:
    """Encode and decode of ``message`` through the envelope, and the bare library's floor."""
    headers, body = messages.encode(message)
    pack, unpack = floor_codec(message)
    timed = {
        "encode_us": best_us(lambda: messages.encode(message), loops, repeats),
        "decode_us": best_us(lambda: messages.decode(headers, body, type(message)), loops, repeats),
        "floor_encode_us": best_us(pack, loops, repeats),
        "floor_decode_us": best_us(unpack, loops, repeats),
    }
    return {name: round(us, 1) for name, us in timed.items()}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--loops", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS / "envelope_cost.json")
    args = parser.parse_args(argv)
    rows = []
    per_gop = {"envelope_us": 0.0, "floor_us": 0.0}
    for kind, (message, decodes) in gop_messages().items():
        headers, body = messages.encode(message)
        if messages.decode(headers, body, type(message)) != message:
            raise RuntimeError(f"{kind}: the envelope does not give back the message it was given")
        row: dict[str, Any] = {"kind": kind, "decoded_per_gop": decodes}
        row |= time_message(message, args.loops, args.repeats)
        per_gop["envelope_us"] += row["encode_us"] + decodes * row["decode_us"]
        per_gop["floor_us"] += row["floor_encode_us"] + decodes * row["floor_decode_us"]
        rows.append(row)
        print(
            f"  {kind:<32} encode {row['encode_us']:7.1f} µs (floor {row['floor_encode_us']:6.1f})"
            f"  decode {row['decode_us']:7.1f} µs (floor {row['floor_decode_us']:6.1f})",
            file=sys.stderr,
        )
    summary = {
        "envelope_us_per_gop": round(per_gop["envelope_us"], 1),
        "floor_us_per_gop": round(per_gop["floor_us"], 1),
        "ratio_to_floor": round(per_gop["envelope_us"] / per_gop["floor_us"], 2),
    }
    result = {"benchmark": "envelope_cost", "params": {"loops": args.loops, "repeats": args.repeats}}
    result |= {"rows": rows, "summary": summary}
    return write_result(result, args.out, "python -m bench.envelope_cost " + " ".join(argv or sys.argv[1:]))


if __name__ == "__main__":
    main()
