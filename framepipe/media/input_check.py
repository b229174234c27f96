"""Inputs outside what the pipeline is tuned for: one warning each, with what to change.

The scaling plan and the stage defaults assume cameras of about 30 fps in GOPs of 1-2 s
(``scaling.demand.DEFAULT_GOPS_PER_S``), at a resolution a CPU replica decodes in real
time. A camera far from that still works, but slowly or wastefully, and nothing would
say why: :class:`InputCheck` watches the stream's parameters and each GOP the gateway
cuts, and reports each kind of problem once per gateway (not once per GOP).
"""

from __future__ import annotations

import itertools
import statistics
from dataclasses import dataclass
from fractions import Fraction

from framepipe.media.gop import Gop


@dataclass(frozen=True)
class InputExpectations:
    """The input the pipeline is tuned for (the thresholds of each warning)."""

    #: ``gateway.gop_max_seconds``: a GOP this long was cut without an IDR (see media.gop).
    gop_max_s: float = 10.0
    #: GOPs shorter than this, ``short_gop_run`` of them in a row, multiply per-GOP overhead.
    short_gop_s: float = 0.25
    short_gop_run: int = 10
    min_fps: float = 5.0
    max_fps: float = 61.0
    #: a frame step this many times the typical one (or a fraction of it) is a variable rate.
    vfr_ratio: float = 1.8
    max_pixels: int = 3840 * 2160
    min_height: int = 240


@dataclass(frozen=True)
class Degraded:
    """One problem: its kind, what was seen, what to change."""

    problem: str
    seen: str
    advice: str


class InputCheck:
    """Feed it the stream size and every GOP; it returns each problem the first time only."""

    def __init__(self, expect: InputExpectations | None = None) -> None:
        self.expect = expect or InputExpectations()
        self.said: set[str] = set()
        self._short_run = 0

    def _once(self, found: list[Degraded]) -> list[Degraded]:
        new = [d for d in found if d.problem not in self.said]
        self.said.update(d.problem for d in new)
        return new

    def stream(self, width: int, height: int, audio_tracks: int = 0) -> list[Degraded]:
        e = self.expect
        found: list[Degraded] = []
        if audio_tracks:
            found.append(
                Degraded(
                    "audio_dropped",
                    f"{audio_tracks} audio track{'s' if audio_tracks > 1 else ''}",
                    "framepipe records and analyses the video stream only, so the camera's sound is "
                    "not kept: switch the camera's audio off to save bandwidth, or record it elsewhere",
                )
            )
        if width * height > e.max_pixels:
            found.append(
                Degraded(
                    "resolution_high",
                    f"{width}x{height}",
                    "decoding and detection cost grows with the pixels: use the camera's 1080p (or "
                    "sub) stream; inference only needs faces above analysis.min_face_px",
                )
            )
        if 0 < height < e.min_height:
            found.append(
                Degraded(
                    "resolution_low",
                    f"{width}x{height}",
                    f"below {e.min_height} lines, faces are too small to detect or recognise: use the "
                    "camera's main stream",
                )
            )
        return self._once(found)

    def gop(self, gop: Gop, time_base: Fraction) -> list[Degraded]:
        e = self.expect
        found: list[Degraded] = []
        duration = gop.duration_s(time_base)
        frames = len(gop.packets)
        if gop.open or duration >= e.gop_max_s:
            found.append(
                Degraded(
                    "long_gop",
                    f"no IDR keyframe for {duration:.1f} s (gateway.gop_max_seconds {e.gop_max_s:g})"
                    + ("; cut at a non-IDR keyframe, its first frames may not decode" if gop.open else ""),
                    "set the camera's keyframe (I-frame) interval to 1-2 s with IDR/closed GOPs; "
                    "each GOP is one message, so long ones add latency and memory",
                )
            )
        self._short_run = self._short_run + 1 if duration < e.short_gop_s else 0
        if self._short_run >= e.short_gop_run:
            found.append(
                Degraded(
                    "short_gops",
                    f"{e.short_gop_run} GOPs in a row under {e.short_gop_s:g} s ({frames} frame(s) each)",
                    "every frame (or nearly) is a keyframe (MJPEG or intra-only): set a keyframe interval "
                    "of 1-2 s on the camera; each GOP costs a message and a decoder start",
                )
            )
        pts = sorted(p.pts for p in gop.packets)
        steps = [b - a for a, b in itertools.pairwise(pts) if b > a]
        if len(steps) >= 4 and duration > 0:
            typical = statistics.median(steps)
            fps = 1.0 / float(typical * time_base)
            if fps < e.min_fps or fps > e.max_fps:
                found.append(
                    Degraded(
                        "frame_rate",
                        f"{fps:.1f} fps (tuned for {e.min_fps:g}-{e.max_fps:g}, about 30)",
                        "set the camera to 10-30 fps: below, tracks break between frames; above, "
                        "every stage does more work for no better detections (or set inference.detect_fps)",
                    )
                )
            if max(steps) > e.vfr_ratio * typical or min(steps) * e.vfr_ratio < typical:
                found.append(
                    Degraded(
                        "variable_frame_rate",
                        f"frame steps from {float(min(steps) * time_base) * 1000:.0f} to "
                        f"{float(max(steps) * time_base) * 1000:.0f} ms in GOP {gop.index}",
                        "turn off the camera's variable/smart frame rate (e.g. 'smart codec', 'VBR "
                        "frame rate'); playback timing and tracking assume a steady rate",
                    )
                )
        return self._once(found)
