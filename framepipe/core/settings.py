"""Every setting a framepipe process reads, as frozen dataclasses.

Stage code, the local supervisor, the CLI and the Kubernetes rendering all read
tunables from :class:`Settings` (names live in :mod:`framepipe.core.topology`),
so a setting cannot differ between a laptop and a cluster. What only the
cluster reads is in :mod:`framepipe.core.cluster_settings`; both load through
the one reader and coercion engine of :mod:`framepipe.core.loader`: defaults,
a TOML file (``--config`` or ``FRAMEPIPE_CONFIG``), then environment variables
named ``FRAMEPIPE_<SECTION>__<FIELD>`` (e.g. ``FRAMEPIPE_NATS__URL``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from framepipe.core.errors import ConfigError
from framepipe.core.paths import resolve_models_dir

ENV_PREFIX = "FRAMEPIPE_"
#: tables of the same TOML file that only the cluster manifests and the autoscaler read.
CLUSTER_SECTIONS = ("k8s", "scaling")


def _positive(section: str, **values: float) -> None:
    for key, value in values.items():
        if value <= 0:
            raise ConfigError(f"{section}.{key} must be > 0, got {value}")


@dataclass(frozen=True)
class NatsSettings:
    url: str = "nats://127.0.0.1:4222"
    max_payload: int = 8 * 1024 * 1024
    monitor_port: int = 8222
    connect_timeout_s: float = 5.0
    #: client pings: a hung server (SIGSTOP, a frozen node) is left after ping_interval_s
    #: × 3 unanswered pings, and the client fails over to another node of the cluster.
    ping_interval_s: float = 5.0
    sync_interval: str = "default"
    #: NATS user; empty: none, or the admin of the local server of local.state_dir.
    user: str = ""
    password: str = field(default="", repr=False)
    #: CA that verifies the server's certificate (TLS); tls_cert/tls_key: mutual TLS.
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""

    def __post_init__(self) -> None:
        if not self.url.startswith(("nats://", "tls://")):
            raise ConfigError(f"nats.url must start with nats:// or tls://, got {self.url!r}")
        if bool(self.user) != bool(self.password):
            raise ConfigError("set nats.user and nats.password together (FRAMEPIPE_NATS__USER/__PASSWORD)")
        if self.user and "@" in self.url:
            raise ConfigError("nats.url already carries credentials: drop them or nats.user/nats.password")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigError("set nats.tls_cert and nats.tls_key together (client certificate and key)")
        if self.max_payload < 1024 * 1024 or self.max_payload > 64 * 1024 * 1024:
            raise ConfigError(f"nats.max_payload must be 1 MiB..64 MiB, got {self.max_payload}")
        _positive("nats", connect_timeout_s=self.connect_timeout_s, ping_interval_s=self.ping_interval_s)

    @property
    def host_port(self) -> tuple[str, int]:
        rest = self.url.split("://", 1)[1].rsplit("@", 1)[-1]
        host, _, port = rest.partition(":")
        return host or "127.0.0.1", int(port or 4222)


@dataclass(frozen=True)
class StreamSettings:
    storage: Literal["file", "memory"] = "file"
    video_max_age_s: float = 3600.0
    video_max_bytes: int = 8 * 1024**3
    output_max_age_s: float = 24 * 3600.0
    detections_max_age_s: float = 7 * 24 * 3600.0
    dlq_max_age_s: float = 14 * 24 * 3600.0
    ledger_ttl_s: float = 3600.0
    duplicate_window_s: float = 300.0
    #: copies of every stream and KV bucket; 0: one per NATS node up to 3 (1 on a single
    #: server, 3 on local.nats_cluster = 3). A cluster renders k8s.stream_replicas here.
    replicas: int = 0
    #: the dead-letter stream's bounds, so a camera sending only poison never fills the disk:
    #: the oldest entries go first (DiscardPolicy.OLD) once either is reached.
    dlq_max_bytes: int = 256 * 1024**2
    dlq_max_msgs: int = 100_000

    def __post_init__(self) -> None:
        if self.storage not in ("file", "memory"):
            raise ConfigError(f"streams.storage must be 'file' or 'memory', got {self.storage!r}")
        _positive(
            "streams",
            video_max_age_s=self.video_max_age_s,
            video_max_bytes=self.video_max_bytes,
            output_max_age_s=self.output_max_age_s,
            duplicate_window_s=self.duplicate_window_s,
            ledger_ttl_s=self.ledger_ttl_s,
            dlq_max_bytes=self.dlq_max_bytes,
            dlq_max_msgs=self.dlq_max_msgs,
        )
        if not 0 <= self.replicas <= 5:
            raise ConfigError(
                f"streams.replicas must be 0..5 (0: one per NATS node, up to 3), got {self.replicas}"
            )

    def replicas_for(self, nodes: int) -> int:
        """Stream/KV replicas on a NATS deployment of ``nodes`` servers."""
        wanted = self.replicas or min(nodes, 3)
        if wanted > nodes:
            raise ConfigError(
                f"streams.replicas ({wanted}) exceeds the NATS servers ({nodes}): "
                "set local.nats_cluster = 3 or lower streams.replicas"
            )
        return wanted


@dataclass(frozen=True)
class ConsumerSettings:
    """Delivery settings shared by every stage's pull consumer."""

    ack_wait_s: float = 30.0
    max_ack_pending: int = 64
    fetch_batch: int = 4
    #: messages one replica works on at once. 2 hides one message's publish and ack round
    #: trips behind the next one's codec work (which stays on one thread); inference takes
    #: more so that frames of several messages share model calls.
    in_flight: int = 2
    max_deliver: int = 5
    retry_backoff_s: float = 1.0
    replicas: int = 1
    metrics_port: int = 0
    #: where /metrics, /healthz and /readyz listen: loopback on a laptop (camera names and
    #: internals stay off the network); the Kubernetes manifests set 0.0.0.0 (probes, scrapes).
    metrics_host: str = "127.0.0.1"

    def _check(self, section: str) -> None:
        _positive(
            section,
            ack_wait_s=self.ack_wait_s,
            max_ack_pending=self.max_ack_pending,
            fetch_batch=self.fetch_batch,
            in_flight=self.in_flight,
            max_deliver=self.max_deliver,
            retry_backoff_s=self.retry_backoff_s,
            replicas=self.replicas,
        )
        for name in ("fetch_batch", "in_flight"):
            if getattr(self, name) > self.max_ack_pending:
                raise ConfigError(
                    f"{section}.{name} ({getattr(self, name)}) must not exceed "
                    f"{section}.max_ack_pending ({self.max_ack_pending})"
                )


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

    def __post_init__(self) -> None:
        if not -1 <= self.metrics_port <= 65535:
            raise ConfigError(f"gateway.metrics_port must be -1 (off) or 0..65535, got {self.metrics_port}")
        if self.pacing not in ("realtime", "fast"):
            raise ConfigError(f"gateway.pacing must be 'realtime' or 'fast', got {self.pacing!r}")
        if self.rtsp_transport not in ("tcp", "udp"):
            raise ConfigError(f"gateway.rtsp_transport must be 'tcp' or 'udp', got {self.rtsp_transport!r}")
        _positive(
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

    def __post_init__(self) -> None:
        self._check("decoder")
        _positive("decoder", threads=self.threads, frames_per_part=self.frames_per_part)


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
        _positive("inference", detect_every=self.detect_every)
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
        _positive(
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
        _positive("encoder", threads=self.threads)


#: what OUTPUT segments are: "burn-in" (boxes drawn into re-encoded video), "overlay" (the
#: camera's own GOP remuxed, boxes as timed metadata the console draws).
OUTPUT_MODES = ("burn-in", "overlay")


@dataclass(frozen=True)
class OutputSettings:
    """``[output]``: the default mode of every camera; ``framepipe cameras mode`` overrides
    it per camera (read by the encoder at every GOP, so a change needs no restart).

    "burn-in" is the default: a newcomer's first recording shows boxes in any player
    (VLC, ffplay, a browser), where overlay's boxes need the console or ``export --burn-in``.
    """

    mode: Literal["burn-in", "overlay"] = "burn-in"

    def __post_init__(self) -> None:
        if self.mode not in OUTPUT_MODES:
            raise ConfigError(f"output.mode must be one of {', '.join(OUTPUT_MODES)}, got {self.mode!r}")


@dataclass(frozen=True)
class AnalysisSettings(ConsumerSettings):
    """Face recognition (the analysis stage) and the per-camera tracks the sink follows."""

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

    def __post_init__(self) -> None:
        self._check("analysis")
        if not 0.0 < self.match_threshold < 2.0:
            raise ConfigError(f"analysis.match_threshold must be in (0, 2), got {self.match_threshold}")
        if not 0.0 < self.track_iou < 1.0:
            raise ConfigError(f"analysis.track_iou must be in (0, 1), got {self.track_iou}")
        _positive(
            "analysis",
            min_face_px=self.min_face_px,
            crops_per_track=self.crops_per_track,
            track_reid_distance=self.track_reid_distance,
            unknown_alert_after_gops=self.unknown_alert_after_gops,
        )
        if self.track_max_gap_gops < 0:
            raise ConfigError(f"analysis.track_max_gap_gops must be >= 0, got {self.track_max_gap_gops}")

    def gallery_path(self, state_dir: str) -> Path:
        return Path(self.gallery_dir) if self.gallery_dir else Path(state_dir) / "faces"


@dataclass(frozen=True)
class SinkSettings(ConsumerSettings):
    #: the sink appends one camera's segments in order: it never takes more than 1.
    in_flight: int = 1
    output_dir: str = "output"
    playlist_window: int = 0

    def __post_init__(self) -> None:
        self._check("sink")
        if self.playlist_window < 0:
            raise ConfigError(f"sink.playlist_window must be >= 0, got {self.playlist_window}")


@dataclass(frozen=True)
class LocalSettings:
    """The embedded runtime; ports 0 pick free loopback ports at start."""

    state_dir: str = ".framepipe"
    shutdown_grace_s: float = 20.0
    nats_port: int = 0
    monitor_port: int = 0
    #: the embedded nats-server: one user per process kind with per-stage permissions
    #: (passwords generated into <state_dir>/nats-auth.json, 0600), and TLS with a
    #: self-signed CA generated into <state_dir>/tls.
    nats_auth: bool = True
    nats_tls: bool = False
    # Scale decoder/inference/encoder from their backlog like KEDA does in a cluster
    # (the [scaling.*] tables); max_replicas caps every stage on one machine
    # (0: the number of CPU cores), whatever the cluster maximum is.
    autoscale: bool = True
    max_replicas: int = 0
    #: nats-servers the supervisor runs: 1, or a 3-node JetStream cluster on loopback (routes,
    #: one store directory per node) whose streams and buckets get streams.replicas copies.
    nats_cluster: int = 1
    #: each embedded server's JetStream file store limit ("20GB", "64MB" or bytes).
    nats_max_file_store: str = "20GB"

    def __post_init__(self) -> None:
        _positive("local", shutdown_grace_s=self.shutdown_grace_s)
        if self.max_replicas < 0:
            raise ConfigError(
                f"local.max_replicas must be >= 0 (0: one per CPU core), got {self.max_replicas}"
            )
        if self.nats_cluster not in (1, 3):
            raise ConfigError(
                f"local.nats_cluster must be 1 or 3 (a JetStream quorum), got {self.nats_cluster}"
            )
        for key, port in (("nats_port", self.nats_port), ("monitor_port", self.monitor_port)):
            if not 0 <= port <= 65535:
                raise ConfigError(f"local.{key} must be 0..65535, got {port}")


@dataclass(frozen=True)
class WebSettings:
    """The HLS server and console (``framepipe web``)."""

    #: the token a browser or player must present; empty: generated at start when needed.
    token: str = field(default="", repr=False)
    #: "auto": a token only when bound to a non-loopback address; "always": also on loopback.
    require_token: Literal["auto", "always"] = "auto"

    def __post_init__(self) -> None:
        if self.require_token not in ("auto", "always"):
            raise ConfigError(f"web.require_token must be 'auto' or 'always', got {self.require_token!r}")
        if self.token and len(self.token) < 16:
            raise ConfigError("web.token must be at least 16 characters (or empty: one is generated)")


@dataclass(frozen=True)
class WebRtcSettings:
    """Live view over WebRTC (WHEP, ``POST /whep/<camera>``) in the web server."""

    enabled: bool = True
    #: comma-separated ``stun:``/``turn:``/``turns:`` URLs for real networks; none on loopback.
    ice_servers: str = ""
    ice_username: str = ""
    ice_credential: str = field(default="", repr=False)
    #: comma-separated addresses ICE offers; empty: 127.0.0.1 when the server is bound to
    #: loopback, else every interface's non-loopback address.
    host_addresses: str = ""
    max_viewers_per_camera: int = 8
    max_viewers: int = 32
    #: a session whose ICE/DTLS has not connected this long after its answer is closed.
    connect_timeout_s: float = 15.0

    def __post_init__(self) -> None:
        _positive("webrtc", max_viewers_per_camera=self.max_viewers_per_camera, max_viewers=self.max_viewers)
        if self.connect_timeout_s <= 0:
            raise ConfigError(f"webrtc.connect_timeout_s must be > 0, got {self.connect_timeout_s}")
        for url in self.ice_urls:
            if not url.startswith(("stun:", "turn:", "turns:")):
                raise ConfigError(f"webrtc.ice_servers: {url!r} is not a stun:, turn: or turns: URL")

    @property
    def ice_urls(self) -> list[str]:
        return [u.strip() for u in self.ice_servers.split(",") if u.strip()]


@dataclass(frozen=True)
class Settings:
    nats: NatsSettings = field(default_factory=NatsSettings)
    streams: StreamSettings = field(default_factory=StreamSettings)
    gateway: GatewaySettings = field(default_factory=GatewaySettings)
    decoder: DecoderSettings = field(default_factory=DecoderSettings)
    inference: InferenceSettings = field(default_factory=InferenceSettings)
    encoder: EncoderSettings = field(default_factory=EncoderSettings)
    analysis: AnalysisSettings = field(default_factory=AnalysisSettings)
    sink: SinkSettings = field(default_factory=SinkSettings)
    output: OutputSettings = field(default_factory=OutputSettings)
    local: LocalSettings = field(default_factory=LocalSettings)
    web: WebSettings = field(default_factory=WebSettings)
    webrtc: WebRtcSettings = field(default_factory=WebRtcSettings)

    def consumer(self, stage: str) -> ConsumerSettings:
        section = getattr(self, stage, None)
        if not isinstance(section, ConsumerSettings):
            raise ConfigError(f"no stage named {stage!r}")
        return section

    def replace(self, **sections: dict[str, Any]) -> Settings:
        """A copy with some fields changed, e.g. ``replace(nats={"url": ...})``."""
        changed = {
            name: dataclasses.replace(getattr(self, name), **values) for name, values in sections.items()
        }
        return dataclasses.replace(self, **changed)

    def to_env(self) -> dict[str, str]:
        """Environment that reproduces these settings in a child process."""
        env: dict[str, str] = {}
        for section in dataclasses.fields(self):
            value = getattr(self, section.name)
            for item in dataclasses.fields(value):
                key = f"{ENV_PREFIX}{section.name.upper()}__{item.name.upper()}"
                env[key] = str(getattr(value, item.name))
        return env
