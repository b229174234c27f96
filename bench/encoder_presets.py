"""Which libx264 preset, tune, thread count and output scale the encoder should use.

The same 720p (and 1080p) GOPs are decoded once; each configuration then encodes them
with the encoder's own ``encode_segment`` (boxes already drawn, as in burn-in). Per
configuration: encode ms per frame, segment kbit/s, and PSNR of the luma against the
source frames (what the bytes buy), all in this run; ``ratio`` is the speed against
today's default (veryfast, no tune, 1 thread, source size) measured in the same rounds.
Configurations are interleaved round by round so load from neighbours hits all alike.

    python -m bench.encoder_presets [--quick] [--resolutions 720p,1080p] [--rounds 2]
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from bench.common import RESULTS, clip, load_gops, ratio, write_result
from framepipe.core.messages import Detection
from framepipe.media.annotate import draw_detections_yuv420
from framepipe.media.codec import decode_gop, encode_segment
from framepipe.media.sample import RESOLUTIONS, ClipSpec, face_box


@dataclass(frozen=True)
class Config:
    preset: str
    tune: str = ""
    threads: int = 1
    output_height: int = 0

    @property
    def label(self) -> str:
        scale = f" →{self.output_height}p" if self.output_height else ""
        return f"{self.preset}{' ' + self.tune if self.tune else ''} t{self.threads}{scale}"


DEFAULT = Config("veryfast")
CONFIGS = (
    DEFAULT,
    Config("ultrafast"),
    Config("superfast"),
    Config("faster"),
    Config("veryfast", "zerolatency"),
    Config("superfast", "zerolatency"),
    Config("ultrafast", "zerolatency"),
    Config("veryfast", threads=2),
    Config("superfast", threads=2),
)


def _psnr(encoded: bytes, reference: list[np.ndarray]) -> float:
    with av.open(io.BytesIO(encoded), format="mpegts") as container:
        planes = [f.to_ndarray(format="gray") for f in container.decode(video=0)]
    errors = []
    for got, want in zip(planes, reference, strict=False):
        if got.shape != want.shape:
            return 0.0  # scaled output: not comparable pixel for pixel
        errors.append(float(np.mean((got.astype(np.float32) - want.astype(np.float32)) ** 2)))
    mse = statistics.mean(errors) if errors else 0.0
    return round(10 * np.log10(255.0**2 / mse), 2) if mse > 0 else 99.0


def run_case(resolution: str, seconds: float, rounds: int, configs: tuple[Config, ...]) -> dict[str, Any]:
    width, height = RESOLUTIONS[resolution]
    spec = ClipSpec(width=width, height=height, fps=30, seconds=seconds, gop=30)
    gops = load_gops(clip(spec))
    decoded = []
    for gop in gops:
        frames = []
        for offset, frame in enumerate(decode_gop(gop)):
            box = Detection(face_box(spec, gop.frame_offset + offset), 0.9)
            frames.append(draw_detections_yuv420(frame, [box]))
        decoded.append((gop, frames, [f.to_ndarray(format="gray") for f in frames]))
    frames_total = sum(len(f) for _, f, _ in decoded)
    samples: dict[str, list[float]] = {c.label: [] for c in configs}
    sizes: dict[str, int] = {}
    psnr: dict[str, float] = {}
    for _ in range(rounds):
        for config in configs:
            total, started = 0, time.perf_counter()
            outputs = []
            for gop, frames, _ in decoded:
                data, _ = encode_segment(
                    frames,
                    Fraction(*gop.time_base),
                    preset=config.preset,
                    threads=config.threads,
                    tune=config.tune,
                    output_height=config.output_height,
                )
                total += len(data)
                outputs.append(data)
            samples[config.label].append((time.perf_counter() - started) * 1000 / frames_total)
            sizes[config.label] = total
            if config.label not in psnr:
                psnr[config.label] = statistics.mean(
                    _psnr(data, reference) for data, (_, _, reference) in zip(outputs, decoded, strict=True)
                )
    base = statistics.median(samples[DEFAULT.label])
    rows = {}
    for config in configs:
        ms = statistics.median(samples[config.label])
        rows[config.label] = {
            "ms_per_frame": round(ms, 3),
            "speed_vs_default": ratio(base, ms),
            "kbit_s": round(sizes[config.label] * 8 / 1000 / seconds, 1),
            "psnr_y_db": psnr[config.label],
            "realtime_30fps_streams_per_core": round(1000 / (ms * 30), 2),
        }
    return {"resolution": resolution, "frames": frames_total, "samples_ms": samples, "summary": rows}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="720p, 2 s, 1 round")
    parser.add_argument("--resolutions", default="720p,1080p")
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS / "encoder_presets.json")
    args = parser.parse_args(argv)
    resolutions = ["720p"] if args.quick else args.resolutions.split(",")
    rounds = 1 if args.quick else args.rounds
    configs = CONFIGS
    cases = {}
    for resolution in resolutions:
        scaled = (Config("superfast", output_height=720),) if resolution == "1080p" else ()
        cases[resolution] = run_case(resolution, args.seconds, rounds, configs + scaled)
    result = {
        "benchmark": "encoder_presets",
        "params": {"resolutions": resolutions, "seconds": args.seconds, "rounds": rounds, "crf": 23},
        "cases": cases,
        "summary": {r: c["summary"] for r, c in cases.items()},
    }
    return write_result(
        result, args.out, " ".join(["python -m bench.encoder_presets", *(argv or sys.argv[1:])])
    )


if __name__ == "__main__":
    main()
