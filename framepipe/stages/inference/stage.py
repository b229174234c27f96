"""Inference stage: frames → face detections (DETECTIONS) → ledger → ENCODE."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from nats.js import JetStreamContext

from framepipe.media.letterbox import Letterbox
from framepipe.pipeline import health
from framepipe.pipeline.config import Names
from framepipe.pipeline.ledger import GopLedger
from framepipe.pipeline.messages import (
    Detection,
    DetectionsMessage,
    EncodeItem,
    FrameBatch,
    FrameDetections,
)
from framepipe.pipeline.runner import Stage, WorkContext
from framepipe.stages.inference.backends import InferenceBackend, create_backend, describe_backend
from framepipe.stages.inference.batching import MicroBatcher
from framepipe.stages.inference.blazeface import BlazeFaceDecoder, RawDetection, preprocess
from framepipe.stages.inference.detectors import fill_skipped, select_frames


class FaceDetector:
    """Backend + BlazeFace pre/post-processing, batched up to ``max_batch``."""

    def __init__(self, backend: InferenceBackend, decoder: BlazeFaceDecoder, max_batch: int) -> None:
        self.backend = backend
        self.decoder = decoder
        self.max_batch = max_batch

    def detect(self, frames: np.ndarray) -> list[list[RawDetection]]:
        results: list[list[RawDetection]] = []
        for start in range(0, len(frames), self.max_batch):
            outputs = self.backend.run(preprocess(frames[start : start + self.max_batch]))
            regressors = next(v for v in outputs.values() if v.shape[-1] == 16)
            scores = next(v for v in outputs.values() if v.shape[-1] == 1)
            results.extend(self.decoder.decode(regressors, scores))
        return results


class Inference(Stage[FrameBatch]):
    name: ClassVar[str] = Names.INFERENCE
    input_kind = FrameBatch
    #: messages of one fetch are processed together so their frames share model calls.
    concurrent: ClassVar[bool] = True

    async def setup(self, js: JetStreamContext) -> None:
        cfg = self.settings.inference
        backend = create_backend(cfg)
        self.backend_name = describe_backend(backend)
        health.set_backend(self.name, self.backend_name)
        self.detector = FaceDetector(
            backend, BlazeFaceDecoder(cfg.model, cfg.score_threshold, cfg.nms_iou), cfg.max_batch
        )
        self.batcher: MicroBatcher[list[RawDetection]] = MicroBatcher(
            self.detector.detect, cfg.max_batch, cfg.batch_timeout_s
        )
        self.ledger = GopLedger(await js.key_value(Names.LEDGER_BUCKET))

    async def close(self) -> None:
        if hasattr(self, "detector"):
            self.detector.backend.close()

    async def process(self, message: FrameBatch, ctx: WorkContext) -> None:
        cfg = self.settings.inference
        frames = np.frombuffer(message.pixels, dtype=np.uint8).reshape(message.shape)
        if cfg.detect_every > 1:
            selected = select_frames(message.frame_indices, cfg.detect_every)
            detected = await self.batcher.submit(frames[np.asarray(selected)])
            raw = fill_skipped(selected, detected, carry=cfg.skipped_frames == "carry")
        else:
            raw = await self.batcher.submit(frames)
        letterbox = Letterbox(frames.shape[1], *message.source_size)
        per_frame = tuple(
            FrameDetections(
                frame=index,
                pts=pts,
                detections=tuple(Detection(letterbox.to_source(d.box), d.score) for d in dets),
            )
            for index, pts, dets in zip(message.frame_indices, message.pts, raw, strict=True)
        )
        camera, gop = message.camera, message.gop
        await ctx.publish(
            Names.subject(Names.DETECTIONS, camera),
            DetectionsMessage(
                camera, gop, message.part, message.parts, per_frame, self.settings.inference.model
            ),
            Names.msg_id(camera, gop, self.name, message.part),
        )
        complete = await self.ledger.record(camera, gop, message.part, message.parts, per_frame)
        if complete is not None:
            await ctx.publish(
                Names.subject(Names.ENCODE, camera),
                EncodeItem(camera, gop, message.video_seq, complete),
                Names.msg_id(camera, gop, "ledger"),
            )
        ctx.frames = len(per_frame)
        ctx.extra["faces"] = sum(len(f.detections) for f in per_frame)
        ctx.extra["gop_complete"] = complete is not None
