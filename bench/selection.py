"""What moving frame selection into the decoder saves: letterbox time and bus bytes.

The decoder stage's own code (``Decoder._decode`` + ``frame_batches``) runs in this
process on the same GOPs at ``detect_fps = 0`` (every frame, the old behaviour) and at
``detect_fps = 5``; the baseline is a bare PyAV decode of the same GOPs in the same run,
so ``letterbox_ms = decoder_ms - decode_ms``. Passes alternate (bare, every, selected, ...)
so a neighbour's load hits all three alike. Letterboxing is also timed alone (frames decoded
beforehand), every frame against the selected ones: the direct resize figure.

    python -m bench.selection [--quick] [--resolutions 720p,1080p] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import RESULTS, bench_settings, clip, load_gops, ratio, write_result
from framepipe.core import messages
from framepipe.core.messages import GopMessage
from framepipe.core.settings import Settings
from framepipe.media.codec import decode_gop
from framepipe.media.letterbox import Letterbox
from framepipe.media.sample import RESOLUTIONS, ClipSpec
from framepipe.stages.decoder import Decoder, frame_batches
from framepipe.stages.frame_selection import model_frames


def _bare_decode(gops: list[GopMessage]) -> float:
    started = time.perf_counter()
    for gop in gops:
        for _ in decode_gop(gop):
            pass
    return time.perf_counter() - started


def _decoder(gops: list[GopMessage], settings: Settings) -> tuple[float, int, int]:
    """Seconds, frames letterboxed, body bytes published by the decoder's own code."""
    decoder = Decoder(settings)
    letterboxed = published = 0
    started = time.perf_counter()
    for seq, gop in enumerate(gops, start=1):
        frames, pts, selected, box = decoder._decode(gop)
        for batch in frame_batches(gop, seq, frames, pts, box, settings, selected):
            published += len(messages.encode(batch)[1])
        letterboxed += len(frames)
    return time.perf_counter() - started, letterboxed, published


def _letterbox_only(gops: list[GopMessage], settings: Settings) -> tuple[float, int]:
    """Seconds of letterboxing alone (frames decoded beforehand) for the frames ``settings`` select."""
    decoded = [(gop, list(decode_gop(gop))) for gop in gops]
    cfg = settings.inference
    total, count = 0.0, 0
    for gop, frames in decoded:
        pts = [int(f.pts or 0) for f in frames]
        chosen = model_frames(
            cfg, range(gop.frame_offset, gop.frame_offset + len(frames)), pts, gop.time_base
        )
        box = Letterbox(cfg.input_size, gop.width, gop.height)
        started = time.perf_counter()
        for frame, pick in zip(frames, chosen, strict=True):
            if pick:
                box.apply(frame)
                count += 1
        total += time.perf_counter() - started
    return total, count


def run_case(resolution: str, seconds: float, repeats: int, detect_fps: float) -> dict[str, Any]:
    width, height = RESOLUTIONS[resolution]
    gops = load_gops(clip(ClipSpec(width=width, height=height, fps=30, seconds=seconds, gop=30)))
    frames = sum(len(g.packets) for g in gops)
    every_settings = bench_settings()
    picked_settings = every_settings.replace(inference={"detect_fps": detect_fps})
    bare, every, picked, lb_every, lb_picked = [], [], [], [], []
    counts: dict[str, tuple[int, int]] = {}
    _decoder(gops[:1], every_settings)  # warm-up: codec and swscale contexts
    for _ in range(repeats):
        bare.append(_bare_decode(gops))
        t, n, b = _decoder(gops, every_settings)
        every.append(t)
        counts["every"] = (n, b)
        t, n, b = _decoder(gops, picked_settings)
        picked.append(t)
        counts["selected"] = (n, b)
        lb_every.append(_letterbox_only(gops, every_settings)[0])
        lb_picked.append(_letterbox_only(gops, picked_settings)[0])
    decode_ms = statistics.median(bare) * 1000 / frames
    every_ms = statistics.median(every) * 1000 / frames
    picked_ms = statistics.median(picked) * 1000 / frames
    letterbox_every = max(every_ms - decode_ms, 1e-6)
    letterbox_picked = max(picked_ms - decode_ms, 1e-6)
    return {
        "resolution": resolution,
        "frames": frames,
        "samples_s": {"bare_decode": bare, "every": every, "selected": picked},
        "summary": {
            "decode_ms_per_frame": round(decode_ms, 3),
            "decoder_ms_per_frame_every": round(every_ms, 3),
            "decoder_ms_per_frame_selected": round(picked_ms, 3),
            "letterbox_ms_per_source_frame_every": round(letterbox_every, 3),
            "letterbox_ms_per_source_frame_selected": round(letterbox_picked, 3),
            "letterboxed_frames": {"every": counts["every"][0], "selected": counts["selected"][0]},
            "bus_bytes": {"every": counts["every"][1], "selected": counts["selected"][1]},
            "letterboxed_factor": ratio(counts["every"][0], counts["selected"][0]),
            "bus_bytes_factor": ratio(counts["every"][1], counts["selected"][1]),
            "letterbox_time_factor": ratio(letterbox_every, letterbox_picked),
            # Letterboxing timed alone (decode excluded): the direct figure; the one above is
            # a difference of two noisy totals.
            "letterbox_alone_ms": {
                "every": round(statistics.median(lb_every) * 1000, 2),
                "selected": round(statistics.median(lb_picked) * 1000, 2),
            },
            "letterbox_alone_factor": ratio(statistics.median(lb_every), statistics.median(lb_picked)),
            "decoder_speedup": ratio(every_ms, picked_ms),
        },
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="720p only, 2 s, 2 repeats")
    parser.add_argument("--resolutions", default="720p,1080p")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--detect-fps", type=float, default=5.0)
    parser.add_argument("--out", type=Path, default=RESULTS / "selection.json")
    args = parser.parse_args(argv)
    resolutions = ["720p"] if args.quick else args.resolutions.split(",")
    seconds, repeats = (2.0, 2) if args.quick else (args.seconds, args.repeats)
    cases = {r: run_case(r, seconds, repeats, args.detect_fps) for r in resolutions}
    result = {
        "benchmark": "selection",
        "params": {
            "resolutions": resolutions,
            "seconds": seconds,
            "repeats": repeats,
            "detect_fps": args.detect_fps,
        },
        "cases": cases,
        "summary": {r: c["summary"] for r, c in cases.items()},
    }
    return write_result(result, args.out, " ".join(["python -m bench.selection", *(argv or sys.argv[1:])]))


if __name__ == "__main__":
    main()
