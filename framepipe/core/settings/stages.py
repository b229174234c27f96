"""The settings of each stage: camera input, decoder, inference, encoder, output, analysis, sink."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from framepipe.core.errors import ConfigError
from framepipe.core.paths import resolve_models_dir
from framepipe.core.settings.attributes import attribute_list, camera_attribute_lists
from framepipe.core.settings.bus import ConsumerSettings, positive


@dataclass(frozen=True)
class GatewaySettings:
    """Camera input. Credentials never live here: put them in the URL (a Secret in a
    cluster) or in FRAMEPIPE_SOURCE_USERNAME / FRAMEPIPE_SOURCE_PASSWORD."""

    pacing: Literal["realtime", "fast"] = "realtime"
    gop_max_seconds: float = 10.0
    rtsp_transport: Literal["tcp", "udp"] = "tcp"
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 10.0
    reconnect_initial_s: float = 0.5
    reconnect_max_s: float = 30.0
    #: /healthz, /readyz, /metrics of the gateway: -1 none (a local run), 0 any free port; pods: 8080.
    metrics_port: int = -1
    metrics_host: str = "127.0.0.1"
    #: each packet to live.<camera> for the instant live view: "watched" while someone watches
    #: it (FP_VIEWERS), "always", or "off".
    live_packets: Literal["watched", "always", "off"] = "watched"

    def __post_init__(self) -> None:
        if self.live_packets not in ("watched", "always", "off"):
            raise ConfigError(
                f"gateway.live_packets must be 'watched', 'always' or 'off', got {self.live_packets!r}"
            )
        if not -1 <= self.metrics_port <= 65535:
            raise ConfigError(f"gateway.metrics_port must be -1 (off) or 0..65535, got {self.metrics_port}")
        if self.pacing not in ("realtime", "fast"):
            raise ConfigError(f"gateway.pacing must be 'realtime' or 'fast', got {self.pacing!r}")
        if self.rtsp_transport not in ("tcp", "udp"):
            raise ConfigError(f"gateway.rtsp_transport must be 'tcp' or 'udp', got {self.rtsp_transport!r}")
        positive(
            "gateway",
            gop_max_seconds=self.gop_max_seconds,
            connect_timeout_s=self.connect_timeout_s,
            read_timeout_s=self.read_timeout_s,
            reconnect_initial_s=self.reconnect_initial_s,
            reconnect_max_s=self.reconnect_max_s,
        )


@dataclass(frozen=True)
class DecoderSettings(ConsumerSettings):
    threads: int = 1
    frames_per_part: int = 32
    #: what a FRAMES batch holds: "picture", each frame resized with no bars (inference pads
    #: it into the model's square; 311 kB instead of 553 kB for a 720p GOP at detect_fps 5),
    #: or "letterbox", the padded square every build before this setting sent. Set
    #: "letterbox" while inference replicas of such a build still run: they refuse picture
    #: batches (dead letters, replayable once upgraded) instead of reading them.
    frames_layout: Literal["picture", "letterbox"] = "picture"

    def __post_init__(self) -> None:
        self._check("decoder")
        positive("decoder", threads=self.threads, frames_per_part=self.frames_per_part)
        if self.frames_layout not in ("picture", "letterbox"):
            raise ConfigError(
                f"decoder.frames_layout must be 'picture' or 'letterbox', got {self.frames_layout!r}"
            )


@dataclass(frozen=True)
class InferenceSettings(ConsumerSettings):
    #: as many as one fetch takes: frames of all of them share model calls.
    in_flight: int = 4
    backend: Literal["onnxruntime", "tensorrt"] = "onnxruntime"
    #: detector family: "blazeface-full" (192×192, small faces), "blazeface-short" (128×128,
    #: close-ups) or "yolo" (an ONNX export in model_file). "full_range"/"short_range" are
    #: the older names of the BlazeFace ones.
    model: Literal["blazeface-full", "blazeface-short", "yolo", "full_range", "short_range"] = (
        "blazeface-full"
    )
    models_dir: str = ".cache/models"
    #: an ONNX file; required for model=yolo; empty: the BlazeFace model built into models_dir.
    model_file: str = ""
    score_threshold: float = 0.5
    #: NMS IoU threshold (BlazeFace merges overlaps by weighted average; YOLO is class-aware).
    nms_iou: float = 0.3
    #: yolo only: square input size of the export (the decoder letterboxes frames to it).
    yolo_input_size: int = 640
    #: yolo only: "v5" = [N, boxes, 4+1+classes] (v5/v7), "v8" = [N, 4+classes, boxes].
    yolo_layout: Literal["v5", "v8"] = "v5"
    #: yolo only: class ids to keep, comma-separated ("0,2"); empty: every class.
    classes: str = ""
    #: yolo only: label per class id, comma-separated ("person,bicycle,car"); else the id.
    class_names: str = ""
    #: ONNX Runtime threads per session; 0: the CPUs this process may use (cgroup quota or
    #: affinity) divided by inference.replicas, so the replicas of a node share its cores.
    intra_op_threads: int = 0
    #: ONNX Runtime threads across graph branches; 1 runs nodes in order (the detectors
    #: here are chains, so more only adds contention).
    inter_op_threads: int = 1
    max_batch: int = 16
    #: frames per model call when the model runs on the CPU: bigger batches spill the
    #: activations out of L2 and run slower (2-core EPYC, BlazeFace full: 4 → ~180
    #: images/s, 16 → ~150). GPUs use max_batch.
    cpu_max_batch: int = 4
    #: tensorrt only: fall back to onnxruntime (one log line) when TensorRT or a GPU is missing.
    allow_fallback: bool = False
    #: tensorrt only: build FP16 engines when the GPU supports fast FP16.
    fp16: bool = True
    #: tensorrt only: serialized engines, keyed by model/GPU/TensorRT/precision/batch range.
    engine_cache_dir: str = ".cache/engines"
    #: cross-message batching: wait at most this long for max_batch frames.
    batch_timeout_s: float = 0.005
    #: run the model on every n-th frame of a GOP (1: every frame).
    detect_every: int = 1
    #: run the model at most this many times per second of video (by frame timestamps;
    #: 0: every frame). The first frame of each message is always detected.
    detect_fps: float = 0.0
    #: frames the model skips: "carry" the last detections, or "none".
    skipped_frames: Literal["carry", "none"] = "carry"

    def __post_init__(self) -> None:
        self._check("inference")
        if self.skipped_frames not in ("carry", "none"):
            raise ConfigError(
                f"inference.skipped_frames must be 'carry' or 'none', got {self.skipped_frames!r}"
            )
        positive("inference", detect_every=self.detect_every)
        if self.detect_fps < 0:
            raise ConfigError(f"inference.detect_fps must be >= 0 (0: every frame), got {self.detect_fps}")
        if self.detect_fps > 0 and self.detect_every > 1:
            raise ConfigError("set inference.detect_fps or inference.detect_every, not both")
        if not 0.0 <= self.batch_timeout_s <= 1.0:
            raise ConfigError(f"inference.batch_timeout_s must be in [0, 1], got {self.batch_timeout_s}")
        if self.backend not in ("onnxruntime", "tensorrt"):
            raise ConfigError(f"inference.backend must be 'onnxruntime' or 'tensorrt', got {self.backend!r}")
        if self.model not in _MODEL_ALIASES:
            raise ConfigError(
                f"inference.model must be 'blazeface-full', 'blazeface-short' or 'yolo', got {self.model!r}"
            )
        if self.family == "yolo" and not self.model_file:
            raise ConfigError(
                "inference.model=yolo needs inference.model_file: the path of your YOLO ONNX export"
            )
        if self.yolo_layout not in ("v5", "v8"):
            raise ConfigError(f"inference.yolo_layout must be 'v5' or 'v8', got {self.yolo_layout!r}")
        if not 0.0 < self.score_threshold < 1.0:
            raise ConfigError(f"inference.score_threshold must be in (0, 1), got {self.score_threshold}")
        if not 0.0 < self.nms_iou < 1.0:
            raise ConfigError(f"inference.nms_iou must be in (0, 1), got {self.nms_iou}")
        positive(
            "inference",
            inter_op_threads=self.inter_op_threads,
            max_batch=self.max_batch,
            cpu_max_batch=self.cpu_max_batch,
            yolo_input_size=self.yolo_input_size,
        )
        if self.intra_op_threads < 0:
            raise ConfigError(
                f"inference.intra_op_threads must be >= 0 (0: auto), got {self.intra_op_threads}"
            )
        _ = self.class_ids  # parsed here so a bad list fails at load, not in the stage

    @property
    def family(self) -> Literal["blazeface-full", "blazeface-short", "yolo"]:
        """The model family, with the older BlazeFace names mapped to the new ones."""
        return _MODEL_ALIASES[self.model]

    @property
    def class_ids(self) -> tuple[int, ...] | None:
        """``classes`` parsed; None keeps every class."""
        if not self.classes.strip():
            return None
        try:
            ids = tuple(int(part) for part in self.classes.split(","))
        except ValueError:
            raise ConfigError(
                f"inference.classes must be comma-separated class ids, got {self.classes!r}"
            ) from None
        if any(i < 0 for i in ids):
            raise ConfigError(f"inference.classes must be ids >= 0, got {self.classes!r}")
        return ids

    @property
    def input_size(self) -> int:
        return {"blazeface-full": 192, "blazeface-short": 128, "yolo": self.yolo_input_size}[self.family]

    @property
    def model_path(self) -> Path:
        if self.model_file:
            return Path(self.model_file)
        variant = "full_range" if self.family == "blazeface-full" else "short_range"
        return self.models_path / f"face_detection_{variant}.onnx"

    @property
    def models_path(self) -> Path:
        """``models_dir`` resolved so that any working directory finds the built models."""
        return resolve_models_dir(self.models_dir)


_MODEL_ALIASES: dict[str, Literal["blazeface-full", "blazeface-short", "yolo"]] = {
    "blazeface-full": "blazeface-full",
    "blazeface-short": "blazeface-short",
    "yolo": "yolo",
    "full_range": "blazeface-full",
    "short_range": "blazeface-short",
}


@dataclass(frozen=True)
class EncoderSettings(ConsumerSettings):
    #: "auto": h264_nvenc when a GPU encoder opens, else libx264; or an FFmpeg encoder name.
    codec: str = "auto"
    #: superfast, from bench.encoder_presets (720p/1080p, crf 23, 2-core VM): about 2x less
    #: CPU per frame than veryfast at ~1.8x the bitrate (720p ~1.7 Mbit/s) and no worse PSNR;
    #: ultrafast is ~3x cheaper but ~5x the bitrate. One thread: cores go to more replicas.
    preset: str = "superfast"
    crf: int = 23
    threads: int = 1
    #: libx264 --tune ("zerolatency", "fastdecode", ...); empty: none. zerolatency measured
    #: no steady gain (a segment is a whole GOP anyway, so its latency buys nothing here).
    tune: str = ""
    #: scale burned-in output to this height before encoding (width keeps the aspect,
    #: rounded to even); 0: the source size. Never scales up.
    output_height: int = 0

    def __post_init__(self) -> None:
        self._check("encoder")
        if self.output_height < 0 or self.output_height % 2:
            raise ConfigError(
                f"encoder.output_height must be even and >= 0 (0: source size), got {self.output_height}"
            )
        if not 0 <= self.crf <= 51:
            raise ConfigError(f"encoder.crf must be 0..51, got {self.crf}")
        positive("encoder", threads=self.threads)


#: what OUTPUT segments are: "burn-in" (boxes drawn into re-encoded video), "overlay" (the
#: camera's own GOP remuxed, boxes as timed metadata the console draws), "on-demand" (overlay
#: recorded always; burn-in only while a viewer watches the annotated live view, docs/output-modes.md).
OUTPUT_MODES = ("burn-in", "overlay", "on-demand")


@dataclass(frozen=True)
class OutputSettings:
    """``[output]``: the default mode of every camera; ``framepipe cameras mode`` overrides
    it per camera (read by the encoder at every GOP, so a change needs no restart).

    "burn-in" is the default: a newcomer's first recording shows boxes in any player
    (VLC, ffplay, a browser), where overlay's boxes need the console or ``export --burn-in``.
    """

    mode: Literal["burn-in", "overlay", "on-demand"] = "burn-in"
    #: an on-demand camera's alert (EVENTS ``alert.*``) gets an event clip, burnt in by the
    #: encoder: this many GOPs before the alert's GOP (still in VIDEO) and after it.
    clip_gops_before: int = 2
    clip_gops_after: int = 2

    def __post_init__(self) -> None:
        if self.mode not in OUTPUT_MODES:
            raise ConfigError(f"output.mode must be one of {', '.join(OUTPUT_MODES)}, got {self.mode!r}")
        for key in ("clip_gops_before", "clip_gops_after"):
            if not 0 <= getattr(self, key) <= 60:
                raise ConfigError(f"output.{key} must be 0..60 GOPs, got {getattr(self, key)!r}")


@dataclass(frozen=True)
class AnalysisSettings(ConsumerSettings):
    """Face recognition (the analysis stage) and the per-camera tracks the sink follows."""

    #: name the faces (dlib on full-resolution crops) and read their attributes; off: faces are
    #: still tracked by their boxes (appeared/left events), dlib is not loaded and nothing is
    #: decoded, the detection-only cost Frigate-style density figures compare (bench.density).
    recognise_faces: bool = True
    #: dlib's descriptor distance under which a face is the gallery's person (dlib: 0.6).
    match_threshold: float = 0.6
    #: faces narrower than this (source pixels) are not embedded, nor enrolled.
    min_face_px: int = 40
    #: crops embedded per face tracklet and GOP: the largest, most confident, spread out.
    crops_per_track: int = 2
    #: where ``framepipe faces`` keeps the gallery on this machine; empty: <local.state_dir>/faces.
    gallery_dir: str = ""
    #: keep a JPEG of each track's best crop (<output>/<camera>/snapshots/); off: embeddings only.
    keep_snapshots: bool = False
    #: a tracklet continues a track of the previous GOP when their boxes overlap this much...
    track_iou: float = 0.2
    #: ...or when their descriptors are this close (a face that moved fast or was missed).
    track_reid_distance: float = 0.45
    #: GOPs a track may go unseen before it has left.
    track_max_gap_gops: int = 1
    #: GOPs a track must stay unknown before its one alert.unknown_person.
    unknown_alert_after_gops: int = 2
    #: face attributes of every camera, comma-separated (e.g. "mask"); empty: none.
    attributes: str = ""
    #: per-camera overrides of ``attributes``: "lobby=mask,fever; garage=" (docs/attributes.md).
    camera_attributes: str = ""
    #: the mask classifier (ONNX, docs/attributes.md); empty: the baseline in inference.models_dir.
    mask_model: str = ""
    #: cameras where a bare face raises one alert.no_mask per track (comma-separated; "*":
    #: every camera that reads mask; empty: none), after no_mask_after_gops unmasked GOPs.
    require_mask: str = ""
    no_mask_after_gops: int = 3

    def __post_init__(self) -> None:
        self._check("analysis")
        if not 0.0 < self.match_threshold < 2.0:
            raise ConfigError(f"analysis.match_threshold must be in (0, 2), got {self.match_threshold}")
        if not 0.0 < self.track_iou < 1.0:
            raise ConfigError(f"analysis.track_iou must be in (0, 1), got {self.track_iou}")
        positive(
            "analysis",
            min_face_px=self.min_face_px,
            crops_per_track=self.crops_per_track,
            track_reid_distance=self.track_reid_distance,
            unknown_alert_after_gops=self.unknown_alert_after_gops,
            no_mask_after_gops=self.no_mask_after_gops,
        )
        if self.track_max_gap_gops < 0:
            raise ConfigError(f"analysis.track_max_gap_gops must be >= 0, got {self.track_max_gap_gops}")
        attribute_list("analysis.attributes", self.attributes)
        camera_attribute_lists(self.camera_attributes)

    def attributes_for(self, camera: str) -> tuple[str, ...]:
        """The attributes switched on for ``camera``: its override, else ``attributes``."""
        overrides = camera_attribute_lists(self.camera_attributes)
        if camera in overrides:
            return overrides[camera]
        return attribute_list("analysis.attributes", self.attributes)

    def requires_mask(self, camera: str) -> bool:
        """Whether ``camera``'s bare faces raise ``alert.no_mask`` (``require_mask``)."""
        cameras = {c.strip() for c in self.require_mask.split(",") if c.strip()}
        return "*" in cameras or camera in cameras

    def all_attributes(self) -> tuple[str, ...]:
        """Every attribute some camera uses (what an analysis replica loads)."""
        names = list(attribute_list("analysis.attributes", self.attributes))
        for listed in camera_attribute_lists(self.camera_attributes).values():
            names += [n for n in listed if n not in names]
        return tuple(names)

    def gallery_path(self, state_dir: str) -> Path:
        return Path(self.gallery_dir) if self.gallery_dir else Path(state_dir) / "faces"


@dataclass(frozen=True)
class SinkSettings(ConsumerSettings):
    #: the sink appends one camera's segments in order: it never takes more than 1.
    in_flight: int = 1
    output_dir: str = "output"
    playlist_window: int = 0
    #: recording retention per camera (stages/retention.py): the oldest segments go once they
    #: are older than this many hours, or once the camera's recording exceeds this many GB.
    #: 0 keeps all.
    retain_hours: float = 0.0
    retain_max_gb: float = 0.0

    def __post_init__(self) -> None:
        self._check("sink")
        if self.playlist_window < 0:
            raise ConfigError(f"sink.playlist_window must be >= 0, got {self.playlist_window}")
        for key in ("retain_hours", "retain_max_gb"):
            value = getattr(self, key)
            if not math.isfinite(value) or value < 0:
                raise ConfigError(f"sink.{key} must be >= 0 (0: keep all), got {value}")
