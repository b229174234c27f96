"""``fever``: the temperature of a face from its paired radiometric thermal camera.

The thermal camera of a visible camera ``V`` (``cameras add T URL --thermal-of V``)
publishes its 16-bit GOPs to ``thermal.V``. For a visible GOP, :meth:`gather` fetches
the thermal GOPs whose frames fall in the GOP's time span (direct gets from the
THERMAL stream by time, then by sequence); :meth:`read` takes each face sample's
thermal frame nearest in capture time (at most ``thermal.max_skew_s`` away, else that
sample has no reading), maps the inner-canthus/forehead region around dlib's
inner eye corners through the camera's homography into the thermal frame, and
takes its ``thermal.percentile`` temperature; the tracklet's reading is the median
over its samples. :meth:`follow` smooths a track's readings across GOPs and raises
``alert.fever`` once per track, the first time it reaches ``thermal.fever_c``.

Wall-clock times: every gateway publishes a GOP when its last frame is due (live or
paced), stamped ``captured_at``, so a frame's capture time is
``captured_at - (last pts - its pts) × time base``, the same rule for both cameras.
No thermal frame near in time, no homography, a face mapped outside the thermal
frame or a scene outside the ambient range: no reading, never a guess.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fractions import Fraction

import numpy as np
import numpy.typing as npt
import structlog
from nats.js import JetStreamContext

from framepipe.core import messages
from framepipe.core.messages import EncodeItem, GopMessage
from framepipe.core.topology import Names
from framepipe.media.thermal import ThermalFormatError, Values, decode_thermal, map_points
from framepipe.stages.analysis.attributes import register
from framepipe.stages.analysis.attributes.base import (
    NO_READING,
    FaceAttribute,
    FaceSample,
    Followed,
    Reading,
    TrackState,
)

log = structlog.get_logger("framepipe.analysis.fever")
ALERT = "alert.fever"
#: the region, in eye spans (distance between the eye centres) around the inner eye
#: corners: a little past each inner corner sideways, from just below the eye line
#: (the canthi) up onto the forehead.
REGION_SIDE = 0.15
REGION_BELOW = 0.2
REGION_ABOVE = 0.9
#: thermal GOPs read per visible GOP at most (a GOP of 10 s of a 30 fps camera: 300).
MAX_THERMAL_GOPS = 400
#: how far before the visible GOP the time search starts (JetStream stores a GOP
#: shortly after its capture time; this covers clock skew and publish delays).
SEARCH_SLACK_S = 5.0
#: a first hit this much older than the start time asked for: the server ignored it.
STALE_START_S = 60.0


def frame_times(gop: GopMessage) -> dict[int, float]:
    """Wall-clock capture time of each pts of a GOP (published when its last frame was due)."""
    base, last = Fraction(*gop.time_base), max(gop.pts)
    return {pts: gop.captured_at - float((last - pts) * base) for pts in gop.pts}


@dataclass
class ThermalFrames:
    """The side input of one visible GOP: its paired thermal GOPs, decoded on first use."""

    #: the thermal camera (whose homography applies).
    camera: str
    gops: list[GopMessage]
    #: capture time of the visible GOP's first frame: a :class:`FaceSample` ``pts`` seconds
    #: into the GOP was captured at ``start_at + pts``.
    start_at: float
    _frames: list[tuple[float, Values]] | None = field(default=None, repr=False)

    def frames(self) -> list[tuple[float, Values]]:
        """(capture time, 16-bit values) of every thermal frame, in time order."""
        if self._frames is None:
            out: list[tuple[float, Values]] = []
            for gop in self.gops:
                times = frame_times(gop)
                try:
                    decoded = decode_thermal(gop)
                except ThermalFormatError as exc:
                    log.warning("thermal.undecodable", camera=gop.camera, gop=gop.gop, error=str(exc))
                    continue
                out += [(times.get(pts, gop.captured_at), values) for pts, values in decoded]
            self._frames = sorted(out, key=lambda f: f[0])
        return self._frames

    def nearest(self, at: float, max_skew_s: float) -> Values | None:
        frames = self.frames()
        if not frames:
            return None
        when, values = min(frames, key=lambda f: abs(f[0] - at))
        return values if abs(when - at) <= max_skew_s else None


def canthus_region(landmarks: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    """The 4 corners (visible pixels) of the inner-canthus/forehead region of dlib's 5 points.

    Points 0-1 are one eye's corners and 2-3 the other's (point 4 the nose); the inner
    corner of each eye is the one nearer the other eye, whatever dlib's order."""
    points = np.asarray(landmarks, np.float64).reshape(5, 2)
    eye_a, eye_b, nose = points[0:2], points[2:4], points[4]
    centre_a, centre_b = eye_a.mean(axis=0), eye_b.mean(axis=0)
    inner_a = eye_a[np.argmin(np.linalg.norm(eye_a - centre_b, axis=1))]
    inner_b = eye_b[np.argmin(np.linalg.norm(eye_b - centre_a, axis=1))]
    span = float(np.linalg.norm(centre_a - centre_b)) or 1.0
    across = (inner_b - inner_a) / (float(np.linalg.norm(inner_b - inner_a)) or 1.0)
    up = np.array([across[1], -across[0]])
    middle = (inner_a + inner_b) / 2.0
    if np.dot(up, nose - middle) > 0:  # "up" points away from the nose
        up = -up
    half = float(np.linalg.norm(inner_b - inner_a)) / 2.0 + REGION_SIDE * span
    below, above = -REGION_BELOW * span, REGION_ABOVE * span
    return np.array(
        [middle + across * side * half + up * height for side in (-1, 1) for height in (below, above)]
    )


class FaceOutsideThermalFrameError(ValueError):
    """The homography maps the face's region (partly) outside the thermal frame."""


def thermal_box(
    matrix: npt.NDArray[np.float64], region: npt.NDArray[np.float64], shape: tuple[int, ...]
) -> tuple[int, int, int, int]:
    """The region's bounding box in thermal pixels; refused when any of it falls outside."""
    mapped = map_points(matrix, region)
    height, width = shape[:2]
    if not np.isfinite(mapped).all():
        raise FaceOutsideThermalFrameError("the homography sends the face to infinity")
    x1, y1 = np.floor(mapped.min(axis=0)).astype(int)
    x2, y2 = np.ceil(mapped.max(axis=0)).astype(int)
    if x1 < 0 or y1 < 0 or x2 > width or y2 > height:
        raise FaceOutsideThermalFrameError(
            f"the face maps to thermal pixels ({x1},{y1})-({x2},{y2}), outside the {width}x{height} frame"
        )
    return int(x1), int(y1), max(int(x2), int(x1) + 1), max(int(y2), int(y1) + 1)


@register
class FeverAttribute(FaceAttribute[ThermalFrames]):
    """Per track: the smoothed maximum temperature of the inner-canthus/forehead region."""

    name = "fever"

    def load(self) -> None:
        self._homographies()

    @functools.cache  # noqa: B019 - one attribute per process; the settings never change
    def _homographies(self) -> dict[str, npt.NDArray[np.float64]]:
        return {
            camera: np.asarray(matrix, np.float64).reshape(3, 3)
            for camera, matrix in self.settings.thermal.homographies().items()
        }

    async def gather(self, js: JetStreamContext, item: EncodeItem, gop: GopMessage) -> ThermalFrames | None:
        """The thermal GOPs of ``thermal.<camera>`` whose frames overlap the visible GOP's span."""
        cfg = self.settings.thermal
        times = frame_times(gop)
        start, end = min(times.values()) - cfg.max_skew_s, max(times.values()) + cfg.max_skew_s
        subject = Names.subject(Names.THERMAL, item.camera)
        since = datetime.fromtimestamp(start - SEARCH_SLACK_S - self.settings.gateway.gop_max_seconds, UTC)
        request: dict[str, object] = {"start_time": since.isoformat().replace("+00:00", "Z")}
        found: list[GopMessage] = []
        for index in range(MAX_THERMAL_GOPS):
            raw = await js._nc.request(  # direct get by time: not in nats-py's API
                f"$JS.API.DIRECT.GET.{Names.THERMAL}",
                json.dumps({**request, "next_by_subj": subject}).encode(),
                timeout=5.0,
            )
            headers = raw.headers or {}
            if "Nats-Sequence" not in headers:  # 404: no (more) thermal GOPs
                break
            request = {"seq": int(headers["Nats-Sequence"]) + 1}
            thermal = messages.decode(headers, raw.data or b"", GopMessage)
            span = frame_times(thermal).values()
            if index == 0 and max(span) < since.timestamp() - STALE_START_S:
                # nats-server < 2.11 ignores start_time and starts at the stream's first GOP.
                _warn_once(
                    "thermal.search_from_start",
                    item.camera,
                    "the NATS server ignores direct-get start_time (needs nats-server >= 2.11): "
                    "thermal frames are searched from the stream's start and may be missed",
                )
            if min(span) > end:
                break
            if max(span) >= start:
                found.append(thermal)
        if not found:
            return None
        return ThermalFrames(found[0].camera, found, min(times.values()))

    def read(self, samples: Sequence[FaceSample], side: ThermalFrames | None) -> Reading:
        cfg = self.settings.thermal
        if side is None or not samples:
            return NO_READING
        matrix = self._homographies().get(side.camera)
        if matrix is None:
            _warn_once(
                "thermal.no_homography",
                side.camera,
                "thermal camera has no homography: run `framepipe thermal calibrate` and set "
                f"[thermal.homography] {side.camera}",
            )
            return NO_READING
        temperatures = []
        for sample in samples:
            values = side.nearest(side.start_at + sample.pts, cfg.max_skew_s)
            if values is None:
                continue  # no thermal frame close enough in time: this sample has no reading
            try:
                x1, y1, x2, y2 = thermal_box(matrix, canthus_region(sample.landmarks), values.shape)
            except FaceOutsideThermalFrameError as exc:
                _warn_once(
                    "thermal.face_outside_frame",
                    side.camera,
                    f"{exc}: reading refused; recompute the homography with `framepipe thermal calibrate`",
                )
                continue
            ambient = cfg.celsius(float(np.median(values)))
            if not cfg.ambient_min_c <= ambient <= cfg.ambient_max_c:
                _warn_once(
                    "thermal.ambient_out_of_range",
                    side.camera,
                    f"scene at {ambient:.1f} C, outside thermal.ambient_min_c..ambient_max_c: no reading",
                )
                continue
            region = values[y1:y2, x1:x2].astype(np.float64)
            celsius = cfg.celsius(float(np.percentile(region, cfg.percentile)))
            if (box := cfg.reference()) is not None:
                rx1, ry1, rx2, ry2 = box
                reference = values[ry1:ry2, rx1:rx2]
                if not reference.size:
                    _warn_once(
                        "thermal.reference_outside_frame", side.camera, "thermal.reference_box is empty"
                    )
                    continue
                celsius += cfg.reference_c - cfg.celsius(float(np.median(reference)))
            temperatures.append(celsius)
        if not temperatures:
            return NO_READING
        return Reading(round(float(np.median(temperatures)), 2), round(len(temperatures) / len(samples), 3))

    def follow(self, state: TrackState, reading: Reading) -> Followed:
        """Smooth across GOPs; ``alert.fever`` once per track, the first time it is hot."""
        if not reading.present or not isinstance(reading.value, float | int):
            return Followed(state)
        cfg = self.settings.thermal
        previous = state.get("smoothed")
        value = float(reading.value)
        smoothed = (
            value
            if not isinstance(previous, float | int)
            else cfg.smoothing * float(previous) + (1.0 - cfg.smoothing) * value
        )
        hot = bool(state.get("hot", False))
        if smoothed >= cfg.fever_c:
            hot = True
        elif smoothed < cfg.fever_c - cfg.hysteresis_c:
            hot = False
        alerted = bool(state.get("alerted", False))
        new_state: dict[str, float | str | bool] = {
            "value": round(smoothed, 2),
            "confidence": reading.confidence,
            "smoothed": smoothed,
            "hot": hot,
            "alerted": alerted or hot,
        }
        return Followed(new_state, ALERT if hot and not alerted else None)


_warned: set[tuple[str, str]] = set()


def _warn_once(event: str, camera: str, why: str) -> None:
    """One line per problem and thermal camera per process (not one per face and GOP)."""
    if (event, camera) not in _warned:
        _warned.add((event, camera))
        log.warning(event, camera=camera, why=why)
