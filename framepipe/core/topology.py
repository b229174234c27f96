"""Every stream, subject, consumer and bucket name, and the one table of stages.

What a stage *is* lives in :data:`STAGES`: the durable consumer(s) it reads, the
subjects and buckets it writes, whether KEDA scales it, which settings section
it reads and which class runs it. The runner, the NATS permissions (local and
cluster), the local supervisor, the rendered manifests, the autoscaler and
``framepipe stage NAME`` all derive from this table, so a new stage is one
entry here plus one class (see docs/architecture.md).

This module knows no stage code: ``entry`` is an import path resolved by
:func:`framepipe.stages.load_stage` one layer up.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

from framepipe.core.errors import ConfigError

CAMERA_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class Names:
    """Streams, subjects, consumers and buckets (see DESIGN.md, 'Streams')."""

    VIDEO = "VIDEO"
    FRAMES = "FRAMES"
    DETECTIONS = "DETECTIONS"
    ENCODE = "ENCODE"
    OUTPUT = "OUTPUT"
    DLQ = "DLQ"
    #: GOPs whose detections are complete, waiting for face analysis (inference → analysis).
    ANALYZE = "ANALYZE"
    #: person appeared / identified / left, unknown-person alerts (JSON, for applications).
    EVENTS = "EVENTS"
    #: radiometric 16-bit GOPs of thermal cameras on ``thermal.<its visible camera>`` (gateway →
    #: the fever attribute; never decoded by the decoder, inference or encoder).
    THERMAL = "THERMAL"

    GATEWAY = "gateway"
    DECODER = "decoder"
    INFERENCE = "inference"
    ENCODER = "encoder"
    ANALYSIS = "analysis"
    SINK = "sink"
    SINK_GAPS = "sink-gaps"
    #: the NATS user of `framepipe setup` and the local tools (status, cameras, dlq, web).
    ADMIN = "setup"

    LEDGER_BUCKET = "FP_GOP_LEDGER"
    SOURCES_BUCKET = "FP_SOURCES"
    CAMERAS_BUCKET = "FP_CAMERAS"  # desired cameras (name → source); the supervisor watches it
    OUTPUT_MODES_BUCKET = "FP_OUTPUT_MODES"  # camera → output mode overriding [output] mode
    FACES_BUCKET = "FP_FACES"  # the face gallery (person → embeddings); analysis replicas watch it
    #: camera → "someone watches its annotated live view" (keys expire after streams.viewer_ttl_s);
    #: the web server refreshes them, the analysis stage routes on-demand GOPs to burn-in on them,
    #: and the gateway forwards live packets while ``instant.<camera>`` is there (viewer_key).
    VIEWERS_BUCKET = "FP_VIEWERS"

    SUBJECT_PREFIX: ClassVar[dict[str, str]] = {
        VIDEO: "video",
        FRAMES: "frames",
        DETECTIONS: "dets",
        ENCODE: "encode",
        OUTPUT: "out",
        DLQ: "dlq",
        ANALYZE: "analyze",
        EVENTS: "events",
        THERMAL: "thermal",
    }

    @classmethod
    def subject(cls, stream: str, camera: str) -> str:
        return f"{cls.SUBJECT_PREFIX[stream]}.{camera}"

    @classmethod
    def wildcard(cls, stream: str) -> str:
        return f"{cls.SUBJECT_PREFIX[stream]}.>"

    @classmethod
    def stream_of(cls, subject: str) -> str:
        """The stream a subject belongs to (``dets.lobby`` → DETECTIONS); "" if none."""
        prefix = subject.partition(".")[0]
        return next((stream for stream, p in cls.SUBJECT_PREFIX.items() if p == prefix), "")

    #: core-NATS subjects (no stream): the gateway's encoded packets as it reads them, for the
    #: instant live view (``live.<camera>``; fire-and-forget, nothing stored).
    LIVE_PREFIX = "live"

    @classmethod
    def live_subject(cls, camera: str) -> str:
        return f"{cls.LIVE_PREFIX}.{camera}"

    @classmethod
    def viewer_key(cls, camera: str, view: str = "annotated") -> str:
        """``camera``'s key in FP_VIEWERS: ``<camera>`` for the annotated live view (on-demand
        burn-in), ``instant.<camera>`` for the instant view (the gateway's live packets)."""
        return camera if view == "annotated" else f"{view}.{camera}"

    @classmethod
    def dlq_subject(cls, stage: str) -> str:
        return f"{cls.SUBJECT_PREFIX[cls.DLQ]}.{stage}"

    @staticmethod
    def msg_id(camera: str, gop: int, stage: str, part: int | None = None) -> str:
        base = f"{camera}:{gop}:{stage}"
        return base if part is None else f"{base}:{part}"

    @staticmethod
    def ledger_key(camera: str, gop: int) -> str:
        return f"{camera}.{gop}"

    @staticmethod
    def kv_subjects(bucket: str) -> str:
        """What a client publishes to when it writes ``bucket``."""
        return f"$KV.{bucket}.>"


def validate_camera_name(name: str) -> str:
    """A camera name is part of NATS subjects and KV keys: check it once, everywhere."""
    if not CAMERA_NAME.match(name):
        raise ConfigError(
            f"camera name {name!r} is invalid: use 1-64 letters, digits, '_' or '-' "
            "(it becomes part of NATS subjects)"
        )
    return name


# -- streams and buckets -----------------------------------------------------------


@dataclass(frozen=True)
class StreamSpec:
    """One JetStream stream; its limits are fields of ``[streams]`` (None: unlimited)."""

    name: str
    work_queue: bool
    max_age_setting: str | None = None
    max_bytes_setting: str | None = None
    #: a product stream applications read: JSON bodies with a published schema
    #: (:mod:`framepipe.core.schemas`); the others keep binary envelopes.
    product: bool = False
    max_msgs_setting: str | None = None

    @property
    def subjects(self) -> tuple[str, ...]:
        return (Names.wildcard(self.name),)


STREAMS: tuple[StreamSpec, ...] = (
    StreamSpec(Names.VIDEO, False, "video_max_age_s", "video_max_bytes"),
    StreamSpec(Names.FRAMES, True),
    StreamSpec(Names.DETECTIONS, False, "detections_max_age_s", product=True),
    StreamSpec(Names.ENCODE, True),
    StreamSpec(Names.OUTPUT, False, "output_max_age_s"),
    # Bounded three ways: a camera that sends only poison drops its oldest letters, never fills the disk.
    StreamSpec(Names.DLQ, False, "dlq_max_age_s", "dlq_max_bytes", max_msgs_setting="dlq_max_msgs"),
    StreamSpec(Names.ANALYZE, True),
    StreamSpec(Names.EVENTS, False, "detections_max_age_s", product=True),
    StreamSpec(Names.THERMAL, False, "video_max_age_s", "thermal_max_bytes"),
)


@dataclass(frozen=True)
class BucketSpec:
    """A KV bucket; ``ttl_setting`` names its ``[streams]`` field (None: no expiry).

    ``direct_reads``: a get is a direct get, answered by any replica in raw bytes, instead
    of a stream API request (JSON with the value in base64, answered by the leader). On for
    the buckets read at every GOP (the output mode, the source state, an on-demand camera's
    viewer key), whose readers can take a value a few milliseconds old; off where a read
    right after a write must see it (the ledger's compare-and-set, a camera just declared,
    a face just enrolled).
    """

    name: str
    ttl_setting: str | None
    direct_reads: bool = False


BUCKETS: tuple[BucketSpec, ...] = (
    BucketSpec(Names.LEDGER_BUCKET, "ledger_ttl_s"),
    BucketSpec(Names.SOURCES_BUCKET, "output_max_age_s", direct_reads=True),
    BucketSpec(Names.CAMERAS_BUCKET, None),
    BucketSpec(Names.OUTPUT_MODES_BUCKET, None, direct_reads=True),
    BucketSpec(Names.FACES_BUCKET, None),
    BucketSpec(Names.VIEWERS_BUCKET, "viewer_ttl_s", direct_reads=True),
)


# -- stages --------------------------------------------------------------------------


@dataclass(frozen=True)
class ConsumerSpec:
    """A durable pull consumer with explicit ack (KEDA scales on the first of a stage)."""

    stream: str
    durable: str
    stage: str

    @property
    def filter_subject(self) -> str:
        return Names.wildcard(self.stream)


@dataclass(frozen=True)
class StageSpec:
    """What a process kind is, for everything that is not its own code.

    ``name`` is at once the process kind, the NATS user, the settings section, the
    Deployment's component and the argument of ``framepipe stage``.
    """

    name: str
    #: "module:callable" taking Settings and returning the stage (or the stages that share
    #: one process); empty for the per-camera gateway, which is started by camera.
    entry: str
    #: durable consumers it reads; the first is the one its backlog (and KEDA) counts.
    consumers: tuple[ConsumerSpec, ...] = ()
    #: subjects it publishes to besides its DLQ subject (wildcards allowed).
    publishes: tuple[str, ...] = ()
    #: KV buckets it writes.
    writes_buckets: tuple[str, ...] = ()
    #: KV buckets it watches (an ordered consumer per watch; reads need no grant).
    watches_buckets: tuple[str, ...] = ()
    #: a ScaledObject in a cluster and a local autoscaler entry, from ``[scaling.<name>]``.
    scaled: bool = False
    #: poison input goes to ``dlq.<name>``.
    dead_letters: bool = True
    #: scaled stages: the default ``[scaling.<name>] lag_threshold`` (backlog per replica).
    lag_threshold: int = 8
    #: the default ``[k8s.resources.<name>]``: cpu request, cpu limit, memory request, limit.
    resources: tuple[str, str, str, str] = ("250m", "1", "256Mi", "1Gi")

    @property
    def consumer(self) -> ConsumerSpec:
        if not self.consumers:
            raise KeyError(f"stage {self.name!r} reads no consumer")
        return self.consumers[0]

    @property
    def per_camera(self) -> bool:
        """One process per camera (the gateway) rather than replicas of a consumer."""
        return not self.consumers


def _reads(stream: str, stage: str, durable: str | None = None) -> ConsumerSpec:
    return ConsumerSpec(stream, durable or stage, stage)


STAGES: tuple[StageSpec, ...] = (
    StageSpec(
        Names.GATEWAY,
        entry="",
        # dets.<camera>: the gap event after a reconnect; FP_SOURCES: the source state.
        # thermal.<camera>: a thermal camera's (``--thermal-of``) GOPs instead of video.<camera>;
        # live.<camera>: each packet as read, for the instant live view (core NATS).
        publishes=(
            Names.wildcard(Names.VIDEO),
            Names.wildcard(Names.DETECTIONS),
            Names.wildcard(Names.THERMAL),
            f"{Names.LIVE_PREFIX}.>",
        ),
        writes_buckets=(Names.SOURCES_BUCKET,),
        # FP_VIEWERS: live packets only while someone watches the instant view (gateway/live.py).
        watches_buckets=(Names.VIEWERS_BUCKET,),
        dead_letters=False,
        resources=("100m", "1", "128Mi", "512Mi"),
    ),
    StageSpec(
        Names.DECODER,
        entry="framepipe.stages.decoder:Decoder",
        consumers=(_reads(Names.VIDEO, Names.DECODER),),
        publishes=(Names.wildcard(Names.FRAMES),),
        scaled=True,
        lag_threshold=8,
        resources=("500m", "2", "512Mi", "1Gi"),
    ),
    StageSpec(
        Names.INFERENCE,
        entry="framepipe.stages.inference.stage:Inference",
        consumers=(_reads(Names.FRAMES, Names.INFERENCE),),
        # analyze.<camera>: the ledger's "GOP g has every part's detections" item.
        publishes=(Names.wildcard(Names.DETECTIONS), Names.wildcard(Names.ANALYZE)),
        writes_buckets=(Names.LEDGER_BUCKET,),
        scaled=True,
        lag_threshold=16,
        resources=("1", "2", "768Mi", "2Gi"),
    ),
    StageSpec(
        Names.ANALYSIS,
        entry="framepipe.stages.analysis.stage:Analysis",
        consumers=(_reads(Names.ANALYZE, Names.ANALYSIS),),
        # encode.<camera>: the GOP's detections with names and per-GOP face tracklets;
        # out.<camera>: on-demand cameras' overlay segments, remuxed here (stages/output_routing.py).
        publishes=(Names.wildcard(Names.ENCODE), Names.wildcard(Names.OUTPUT)),
        watches_buckets=(Names.FACES_BUCKET,),
        scaled=True,
        # ~0.5 s of CPU per GOP with a face (like the encoder): a small backlog per replica.
        lag_threshold=4,
        resources=("500m", "2", "512Mi", "1536Mi"),
    ),
    StageSpec(
        Names.ENCODER,
        entry="framepipe.stages.encoder:Encoder",
        consumers=(_reads(Names.ENCODE, Names.ENCODER),),
        publishes=(Names.wildcard(Names.OUTPUT),),
        scaled=True,
        lag_threshold=4,
        resources=("1", "2", "512Mi", "1536Mi"),
    ),
    StageSpec(
        Names.SINK,
        entry="framepipe.stages.sink:sink_stages",
        consumers=(
            _reads(Names.OUTPUT, Names.SINK),
            _reads(Names.DLQ, Names.SINK, Names.SINK_GAPS),
        ),
        # events.<camera>: the sink follows each camera's tracks in GOP order (stages/tracking.py);
        # encode.<camera>: an on-demand camera's event clips (stages/event_clips.py).
        publishes=(Names.wildcard(Names.EVENTS), Names.wildcard(Names.ENCODE)),
        resources=("100m", "500m", "128Mi", "512Mi"),
    ),
)


def process_kind(process: str) -> str:
    """The kind of a supervised process: ``decoder-0`` → decoder, ``gateway-lobby_1`` → gateway."""
    if process.startswith(f"{Names.GATEWAY}-"):
        return Names.GATEWAY  # camera names may hold '-' themselves
    return process.rsplit("-", 1)[0]


def stage_spec(name: str) -> StageSpec:
    for spec in STAGES:
        if spec.name == name:
            return spec
    known = ", ".join(s.name for s in consumer_stages())
    raise ConfigError(f"unknown stage {name!r}: use {known}")


def consumer_stages() -> tuple[StageSpec, ...]:
    """Stages that run as replicas of a consumer (``framepipe stage NAME``, a Deployment each)."""
    return tuple(spec for spec in STAGES if not spec.per_camera)


def scaled_stages() -> tuple[str, ...]:
    """Names of the stages KEDA (and the local autoscaler) scale from their backlog."""
    return tuple(spec.name for spec in STAGES if spec.scaled)


def consumer_specs() -> tuple[ConsumerSpec, ...]:
    """Every durable consumer of every stage."""
    return tuple(consumer for spec in STAGES for consumer in spec.consumers)


def consumer_spec(durable: str) -> ConsumerSpec:
    for spec in consumer_specs():
        if spec.durable == durable:
            return spec
    raise KeyError(durable)


#: the process kinds that connect to NATS, each as its own user (admin first).
USERS: tuple[str, ...] = (Names.ADMIN, *(spec.name for spec in STAGES))
#: names fixed by the table, read where a type needs a literal (settings sections).
SCALED_STAGES: tuple[str, ...] = scaled_stages()
