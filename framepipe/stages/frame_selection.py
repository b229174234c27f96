"""Which frames the model runs on (``detect_every``, ``detect_fps``), and what the frames
it skips carry. Nothing here depends on the detector family.

The decoder chooses (:func:`model_frames`), so a skipped frame is never letterboxed nor
sent over the bus; inference expands the results back to every frame (:func:`fill_skipped`).
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from typing import TypeVar

from framepipe.core.settings import InferenceSettings

#: one detection as the detector returns it (the stage's RawDetection).
DetectionT = TypeVar("DetectionT")


def select_frames(frame_indices: Sequence[int], every: int) -> list[bool]:
    """Which frames of one message the model runs on (``detect_every``).

    Frame n of a GOP is detected when ``n % every == 0``; the first frame of
    every message is detected too, because a skipped frame can only carry
    detections from an earlier frame of the same message (parts of a GOP may
    land on different replicas).
    """
    if every < 1:
        raise ValueError(f"detect_every must be >= 1, got {every}")
    return [pos == 0 or index % every == 0 for pos, index in enumerate(frame_indices)]


def select_by_rate(pts: Sequence[int], time_base: tuple[int, int], detect_fps: float) -> list[bool]:
    """Which frames of one message the model runs on (``detect_fps``), by timestamp.

    Video time is cut into slots of ``1 / detect_fps`` seconds from pts 0; a
    frame is detected when it is the first frame of its slot, so the model runs
    at most ``detect_fps`` times per second of video whatever the frame rate
    (variable frame rate included). The first frame of every message is
    detected too, for the same reason as in :func:`select_frames`. Exact
    rational arithmetic: 30 fps at 5/s picks every 6th frame, never drifting.
    """
    if detect_fps <= 0:
        raise ValueError(f"detect_fps must be > 0, got {detect_fps}")
    num, den = time_base
    if num <= 0 or den <= 0:
        raise ValueError(f"time_base must be positive, got {time_base}")
    # limit_denominator: 29.97 stays 2997/100, not the float's binary expansion.
    rate = Fraction(detect_fps).limit_denominator(1000)
    selected: list[bool] = []
    previous: int | None = None
    for value in pts:
        slot = (value * num * rate.numerator) // (den * rate.denominator)
        selected.append(previous is None or slot != previous)
        previous = slot
    return selected


def fill_skipped(
    selected: Sequence[bool], detected: Sequence[list[DetectionT]], carry: bool
) -> list[list[DetectionT]]:
    """Expand detections of the selected frames to every frame (carry or empty)."""
    if sum(selected) != len(detected):
        raise ValueError(f"{sum(selected)} frames selected but {len(detected)} results")
    results = iter(detected)
    out: list[list[DetectionT]] = []
    last: list[DetectionT] = []
    for chosen in selected:
        if chosen:
            last = next(results)
            out.append(last)
        else:
            out.append(list(last) if carry else [])
    return out


def model_frames(
    cfg: InferenceSettings, frame_indices: Sequence[int], pts: Sequence[int], time_base: tuple[int, int]
) -> list[bool]:
    """Which of these frames (one GOP, presentation order) the model runs on, by the
    ``[inference]`` settings: ``detect_fps`` by timestamp, else ``detect_every``, else all."""
    if cfg.detect_fps > 0:
        return select_by_rate(pts, time_base, cfg.detect_fps)
    if cfg.detect_every > 1:
        return select_frames(frame_indices, cfg.detect_every)
    return [True] * len(frame_indices)
