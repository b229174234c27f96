"""Inference stage: frames → detections (DETECTIONS) → ledger → ENCODE."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import structlog
from nats.js import JetStreamContext

from framepipe.core import health
from framepipe.core.ledger import GopLedger
from framepipe.core.messages import (
    Detection,
    DetectionsMessage,
    EncodeItem,
    FrameBatch,
    FrameDetections,
)
from framepipe.core.runner import Done, LogValue, Stage, WorkContext
from framepipe.core.settings import InferenceSettings, Settings
from framepipe.core.topology import ConsumerSpec, Names, consumer_spec
from framepipe.media.letterbox import Letterbox, place
from framepipe.stages.frame_selection import fill_skipped, select_by_rate, select_frames
from framepipe.stages.inference.backends import backend_info, describe_backend
from framepipe.stages.inference.batching import MicroBatcher
from framepipe.stages.inference.detectors import Detector, RawDetection, build_detector

log = structlog.get_logger("framepipe.inference")


def model_label(cfg: InferenceSettings) -> str:
    """The model as DETECTIONS messages and metrics name it: the family, plus the file for YOLO."""
    return f"yolo:{Path(cfg.model_file).name}" if cfg.family == "yolo" else cfg.family


@dataclass(frozen=True)
class Loaded:
    """What :meth:`Inference.setup` makes: the model, its batcher, the GOP ledger."""

    detector: Detector
    batcher: MicroBatcher[list[RawDetection]]
    ledger: GopLedger


class Inference(Stage[FrameBatch]):
    name: ClassVar[str] = Names.INFERENCE
    consumer: ClassVar[ConsumerSpec] = consumer_spec(Names.INFERENCE)
    input_kind = FrameBatch

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        #: the DETECTIONS ``model`` field and the backend-info metric's label.
        self.model_label = model_label(settings.inference)
        self._loaded: Loaded | None = None
        self._warned_no_timestamps = False

    @property
    def loaded(self) -> Loaded:
        if self._loaded is None:
            raise RuntimeError("Inference.setup() has not run")
        return self._loaded

    async def setup(self, js: JetStreamContext) -> None:
        cfg = self.settings.inference
        detector = build_detector(cfg)
        backend = detector.backend
        info = backend_info(backend)
        health.set_backend(self.name, describe_backend(backend))
        health.set_inference_backend(self.name, info.backend, info.device, info.precision, self.model_label)
        log.info(
            "inference.backend",
            backend=info.backend,
            device=info.device,
            precision=info.precision,
            model=self.model_label,
            intra_op_threads=backend.intra_op_threads,
        )
        # Flush at the detector's own call size (cpu_max_batch on the CPU), not later.
        batcher = MicroBatcher(detector.detect, detector.max_batch, cfg.batch_timeout_s)
        self._loaded = Loaded(detector, batcher, GopLedger(await js.key_value(Names.LEDGER_BUCKET)))

    async def close(self) -> None:
        if self._loaded is not None:
            self._loaded.detector.backend.close()
            self._loaded = None
        await super().close()

    def select(self, message: FrameBatch) -> list[bool] | None:
        """Frames of a message from a decoder older than ``FrameBatch.selected`` (which sent
        every frame) to run the model on; None: every frame."""
        cfg = self.settings.inference
        if cfg.detect_fps > 0:
            if message.has_timestamps:
                return select_by_rate(message.pts, message.time_base, cfg.detect_fps)
            if not self._warned_no_timestamps:
                self._warned_no_timestamps = True
                log.warning(
                    "inference.no_timestamps",
                    camera=message.camera,
                    gop=message.gop,
                    detail="frames carry no time base (older decoder): detecting every frame",
                )
            return None
        if cfg.detect_every > 1:
            return select_frames(message.frame_indices, cfg.detect_every)
        return None

    async def process(self, message: FrameBatch, ctx: WorkContext) -> Done:
        cfg, loaded = self.settings.inference, self.loaded
        frames = np.frombuffer(message.pixels, dtype=np.uint8).reshape(message.pixel_shape)
        if message.picture != (0, 0):  # the pictures alone: pad them into the model's square here
            frames = place(frames, message.shape[1], message.pad)
        fields: dict[str, LogValue] = {}
        # The decoder sent only the frames the model runs on; older decoders sent every frame.
        selected = None if message.selected else self.select(message)
        if message.selected:
            detected = await loaded.batcher.submit(frames)
            raw = fill_skipped(message.selected, detected, carry=cfg.skipped_frames == "carry")
            fields["detected"] = len(detected)
        elif selected is not None and not all(selected):
            detected = await loaded.batcher.submit(frames[np.asarray(selected)])
            raw = fill_skipped(selected, detected, carry=cfg.skipped_frames == "carry")
            fields["detected"] = len(detected)
        else:
            raw = await loaded.batcher.submit(frames)
        letterbox = Letterbox(frames.shape[1], *message.source_size)
        per_frame = tuple(
            FrameDetections(
                frame=index,
                pts=pts,
                detections=tuple(Detection(letterbox.to_source(d.box), d.score, d.label) for d in dets),
            )
            for index, pts, dets in zip(message.frame_indices, message.pts, raw, strict=True)
        )
        camera, gop = message.camera, message.gop
        await ctx.publish(
            Names.subject(Names.DETECTIONS, camera),
            DetectionsMessage(camera, gop, message.part, message.parts, per_frame, self.model_label),
            Names.msg_id(camera, gop, self.name, message.part),
        )
        complete = await loaded.ledger.record(camera, gop, message.part, message.parts, per_frame)
        if complete is not None:
            await ctx.publish(  # the analysis stage names the faces, then hands it to the encoder
                Names.subject(Names.ANALYZE, camera),
                EncodeItem(camera, gop, message.video_seq, complete),
                Names.msg_id(camera, gop, "ledger"),
            )
        fields["faces"] = sum(len(f.detections) for f in per_frame)
        return Done(frames=len(per_frame), gop_complete=complete is not None, fields=fields)
