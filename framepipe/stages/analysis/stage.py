"""Analysis stage: name the faces of a GOP on full-resolution crops (ANALYZE → ENCODE).

Stateless and GOP-parallel like the encoder: it takes the "GOP g has every part's
detections" item, links the GOP's detections into tracklets by IoU (boxes only), and
when there is a face re-reads the GOP from VIDEO, decodes it at full resolution and
converts only the chosen frames (``analysis.crops_per_track`` per tracklet) to RGB,
aligns each face with dlib's 5-point model and embeds it with dlib's ResNet. Each
tracklet's identity is the gallery vote of its crops. The item goes on to the encoder
with names on the detections and the tracklets beside them; the sink, which sees each
camera's GOPs in order, links tracklets into tracks and emits the EVENTS
(:mod:`framepipe.stages.tracking`). A GOP without faces costs one publish.
"""

from __future__ import annotations

import asyncio
import io
from collections import Counter
from dataclasses import dataclass
from fractions import Fraction
from typing import ClassVar

import numpy as np
import numpy.typing as npt
from nats.js import JetStreamContext

from framepipe.core import health
from framepipe.core.gallery import UNKNOWN, GalleryIndex
from framepipe.core.messages import (
    AttributeReading,
    Detection,
    EncodeItem,
    FaceTracklet,
    FrameDetections,
    GopMessage,
)
from framepipe.core.runner import Done, Stage, WorkContext
from framepipe.core.settings import Settings
from framepipe.core.topology import ConsumerSpec, Names, consumer_spec
from framepipe.media.codec import decode_gop
from framepipe.stages.analysis.attributes.base import FaceSample
from framepipe.stages.analysis.embedder import Crop, FaceEmbedder
from framepipe.stages.analysis.reading import AttributeSet
from framepipe.stages.analysis.tracklets import Sighting, Tracklet, choose_crops, link
from framepipe.stages.analysis.watch import GalleryWatch
from framepipe.stages.output_routing import OutputRouter
from framepipe.stages.video_reads import read_gop


@dataclass(frozen=True)
class Embedded:
    """The crops of one tracklet that were embedded, and their descriptors."""

    sightings: list[Sighting]
    crops: list[Crop]
    descriptors: npt.NDArray[np.float32]
    #: the full-resolution frame's (width, height).
    frame_size: tuple[int, int] = (0, 0)

    def samples(self, gop: GopMessage) -> list[FaceSample]:
        """The crops as the attributes see them (:class:`FaceSample`)."""
        base = min(gop.pts)
        tick = Fraction(*gop.time_base)
        return [
            FaceSample(
                s.frame, float((s.pts - base) * tick), s.detection.box, c.landmarks, c.chip, self.frame_size
            )
            for s, c in zip(self.sightings, self.crops, strict=True)
        ]


def vote(index: GalleryIndex, embedded: Embedded) -> tuple[str, float]:
    """The tracklet's identity: the name most of its crops match (ties: nearest), else unknown."""
    if not len(embedded.descriptors):
        return UNKNOWN, -1.0
    matches = index.match(embedded.descriptors)
    known = Counter(m.name for m in matches if m.known)
    if not known:
        return UNKNOWN, min(m.distance for m in matches)
    top = max(known.values())
    best = min((m for m in matches if m.known and known[m.name] == top), key=lambda m: m.distance)
    return best.name, best.distance


def jpeg(chip: npt.NDArray[np.uint8]) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(chip).save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


class Analysis(Stage[EncodeItem]):
    name: ClassVar[str] = Names.ANALYSIS
    consumer: ClassVar[ConsumerSpec] = consumer_spec(Names.ANALYSIS)
    input_kind = EncodeItem

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self._embedder: FaceEmbedder | None = None
        self.gallery = GalleryWatch(settings.analysis.match_threshold)
        self.router = OutputRouter(settings)
        #: unknown attribute names fail here, in one line, before anything starts.
        self.attributes = AttributeSet(settings)

    @property
    def embedder(self) -> FaceEmbedder:
        if self._embedder is None:
            raise RuntimeError("Analysis.setup() has not run")
        return self._embedder

    async def setup(self, js: JetStreamContext) -> None:
        if self.settings.analysis.recognise_faces:
            self._embedder = await asyncio.to_thread(FaceEmbedder)
            await asyncio.to_thread(self.attributes.load)
        health.set_backend(self.name, "dlib-cpu" if self.settings.analysis.recognise_faces else "boxes-only")
        await self.gallery.start(js)
        await self.router.setup(js)

    async def close(self) -> None:
        await self.gallery.stop()
        await super().close()

    def embed(self, gop: GopMessage, wanted: dict[int, list[Sighting]]) -> dict[int, Embedded]:
        """Decode the GOP; convert and embed only the frames in ``wanted`` (tracklet → crops)."""
        by_frame: dict[int, list[tuple[int, Sighting]]] = {}
        for local, sightings in wanted.items():
            for sighting in sightings:
                by_frame.setdefault(sighting.frame, []).append((local, sighting))
        crops: list[tuple[int, Sighting, Crop]] = []
        last = max(by_frame)
        size = (0, 0)
        for offset, frame in enumerate(decode_gop(gop, 1)):
            index = gop.frame_offset + offset
            if index in by_frame:
                image: npt.NDArray[np.uint8] = np.ascontiguousarray(frame.to_ndarray(format="rgb24"))
                size = (image.shape[1], image.shape[0])
                for local, sighting in by_frame[index]:
                    crops.append((local, sighting, self.embedder.crop(image, sighting.detection.box)))
            if index >= last:
                break
        descriptors = self.embedder.describe([c.chip for _, _, c in crops])
        out: dict[int, Embedded] = {}
        for local in wanted:
            rows = [i for i, (owner, _, _) in enumerate(crops) if owner == local]
            out[local] = Embedded(
                [crops[i][1] for i in rows], [crops[i][2] for i in rows], descriptors[rows], size
            )
        return out

    def summarise(
        self,
        track: Tracklet,
        embedded: Embedded | None,
        gop: GopMessage | None,
        attributes: tuple[AttributeReading, ...] = (),
    ) -> FaceTracklet:
        cfg = self.settings.analysis
        first, last = track.sightings[0], track.last
        identity, distance, embedding, best = UNKNOWN, -1.0, b"", first
        snapshot = b""
        if embedded is not None and len(embedded.descriptors):
            identity, distance = vote(self.gallery.index, embedded)
            weights = np.array([max(c.frontalness, 0.05) for c in embedded.crops], dtype=np.float32)
            mean = (embedded.descriptors * weights[:, None]).sum(axis=0) / weights.sum()
            embedding = mean.astype("<f4").tobytes()
            pick = max(range(len(embedded.crops)), key=lambda i: embedded.crops[i].frontalness)
            best = embedded.sightings[pick]
            if cfg.keep_snapshots:
                snapshot = jpeg(embedded.crops[pick].chip)
        return FaceTracklet(
            local=track.local,
            first_frame=first.frame,
            last_frame=last.frame,
            first_box=first.detection.box,
            last_box=last.detection.box,
            first_seen=seen_at(gop, first.pts),
            last_seen=seen_at(gop, last.pts),
            identity="" if identity == UNKNOWN else identity,
            distance=round(distance, 4),
            crops=0 if embedded is None else len(embedded.descriptors),
            embedding=embedding,
            best_frame=best.frame,
            best_box=best.detection.box,
            snapshot=snapshot,
            attributes=attributes,
        )

    async def process(self, message: EncodeItem, ctx: WorkContext) -> Done:
        cfg = self.settings.analysis
        tracks = link(message.frames, cfg.track_iou)
        wanted = {
            t.local: crops
            for t in tracks
            if cfg.recognise_faces and (crops := choose_crops(t, cfg.crops_per_track, cfg.min_face_px))
        }
        gop: GopMessage | None = None
        embedded: dict[int, Embedded] = {}
        if tracks:
            gop = await read_gop(ctx.js, message)  # for the timestamps even without crops
        if wanted and gop is not None:
            embedded = await self.offload(self.embed, gop, wanted)
        readings: dict[int, tuple[AttributeReading, ...]] = {}
        switched_on = self.attributes.for_camera(message.camera)
        if switched_on and embedded and gop is not None:
            gathered = await self.attributes.gather(ctx.js, message, gop, switched_on)
            samples = {local: e.samples(gop) for local, e in embedded.items()}
            readings = await self.offload(
                self.attributes.read, message.camera, message.gop, gathered, samples
            )
        unnamed = UNKNOWN if cfg.recognise_faces else ""  # off: not "an unknown person"
        faces = tuple(
            self.summarise(t, embedded.get(t.local), gop, readings.get(t.local, ())) for t in tracks
        )
        named: dict[tuple[int, int], tuple[int, str, tuple[AttributeReading, ...]]] = {}
        for track, face in zip(tracks, faces, strict=True):
            for s in track.sightings:
                named[(s.frame, s.index)] = (track.local, face.identity or unnamed, face.attributes)
        frames = tuple(
            FrameDetections(
                f.frame,
                f.pts,
                tuple(
                    Detection(d.box, d.score, d.label, *named.get((f.frame, i), (-1, "", ())))
                    for i, d in enumerate(f.detections)
                ),
            )
            for f in message.frames
        )
        routed = await self.router.route(
            self,
            ctx,
            EncodeItem(message.camera, message.gop, message.video_seq, frames, faces),
            gop,
            read_gop,
        )
        identified = sum(1 for f in faces if f.identity)
        return Done(
            frames=len(message.frames),
            fields={
                "tracklets": len(faces),
                "embedded": sum(f.crops for f in faces),
                "identified": identified,
                "gallery": len(self.gallery.index),
                **routed,
                "attributes": sum(len(f.attributes) for f in faces),
            },
        )


def seen_at(gop: GopMessage | None, pts: int) -> float:
    """Wall-clock time of a frame: the GOP's capture time plus its offset in the GOP."""
    if gop is None:
        return 0.0
    offset = float((pts - min(gop.pts)) * Fraction(*gop.time_base))
    return round((gop.captured_at or 0.0) + offset, 3)
