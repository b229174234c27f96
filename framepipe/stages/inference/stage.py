"""Inference stage: frames → detections (DETECTIONS) → ledger → ENCODE."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import structlog
from nats.js import JetStreamContext

from framepipe.core import health
from framepipe.core.errors import ConfigError
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
from framepipe.media.letterbox import Letterbox
from framepipe.stages.inference.backends import (
    InferenceBackend,
    backend_info,
    create_backend,
    describe_backend,
)
from framepipe.stages.inference.batching import MicroBatcher
from framepipe.stages.inference.blazeface import BlazeFaceDecoder, RawDetection, preprocess
from framepipe.stages.inference.detectors import (
    Detector,
    YoloDecoder,
    YoloDetector,
    fill_skipped,
    select_by_rate,
    select_frames,
)

log = structlog.get_logger("framepipe.inference")


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


def model_label(cfg: InferenceSettings) -> str:
    """The model as DETECTIONS messages and metrics name it: the family, plus the file for YOLO."""
    return f"yolo:{Path(cfg.model_file).name}" if cfg.family == "yolo" else cfg.family


def _check_input_size(backend: InferenceBackend, cfg: InferenceSettings) -> None:
    """A fixed model input that differs from what the decoder sends fails every message: fail now."""
    shape = getattr(backend, "input_shape", None)
    if not shape or len(shape) != 4:
        return
    height, width = shape[2], shape[3]
    if isinstance(height, int) and isinstance(width, int) and (height, width) != (cfg.input_size,) * 2:
        field = "yolo_input_size" if cfg.family == "yolo" else "model"
        raise ConfigError(
            f"model {cfg.model_path} takes {width}x{height} images but frames are "
            f"{cfg.input_size}x{cfg.input_size}: set inference.{field} to match"
        )


def build_detector(cfg: InferenceSettings) -> Detector:
    """The detector plug-in that ``inference.model`` names, on the configured backend."""
    if cfg.family == "yolo" and not cfg.model_path.is_file():
        raise ConfigError(
            f"inference.model_file {cfg.model_path} does not exist: point it at your YOLO ONNX export"
        )
    backend = create_backend(cfg)
    try:
        _check_input_size(backend, cfg)
    except ConfigError:
        backend.close()
        raise
    per_call = (
        cfg.max_batch if backend_info(backend).device != "cpu" else min(cfg.max_batch, cfg.cpu_max_batch)
    )
    if cfg.family == "yolo":
        names = [n.strip() for n in cfg.class_names.split(",")] if cfg.class_names.strip() else []
        decoder = YoloDecoder(
            cfg.score_threshold,
            cfg.nms_iou,
            classes=cfg.class_ids,
            transposed=cfg.yolo_layout == "v8",
            names=names,
        )
        return YoloDetector(backend, decoder, per_call)
    return FaceDetector(backend, BlazeFaceDecoder(cfg.family, cfg.score_threshold, cfg.nms_iou), per_call)


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
            intra_op_threads=getattr(backend, "intra_op_threads", None),
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
        """Frames of ``message`` to run the model on; None: every frame."""
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
        frames = np.frombuffer(message.pixels, dtype=np.uint8).reshape(message.shape)
        selected = self.select(message)
        fields: dict[str, LogValue] = {}
        if selected is not None and not all(selected):
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
            await ctx.publish(
                Names.subject(Names.ENCODE, camera),
                EncodeItem(camera, gop, message.video_seq, complete),
                Names.msg_id(camera, gop, "ledger"),
            )
        fields["faces"] = sum(len(f.detections) for f in per_frame)
        return Done(frames=len(per_frame), gop_complete=complete is not None, fields=fields)
