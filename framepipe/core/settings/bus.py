"""The settings every section shares: the bus, the streams, and a durable consumer's knobs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from framepipe.core.errors import ConfigError


def positive(section: str, **values: float) -> None:
    """Refuse, with the setting's dotted name, any value that is not > 0."""
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
        positive("nats", connect_timeout_s=self.connect_timeout_s, ping_interval_s=self.ping_interval_s)

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
    #: how long a viewer of a live view (an on-demand camera's annotated one, any camera's
    #: instant one) counts as watching after the web server last saw it (FP_VIEWERS keys expire
    #: after this; the web server refreshes them).
    viewer_ttl_s: float = 10.0
    duplicate_window_s: float = 300.0
    #: copies of every stream and KV bucket; 0: one per NATS node up to 3 (1 on a single
    #: server, 3 on local.nats_cluster = 3). A cluster renders k8s.stream_replicas here.
    replicas: int = 0
    #: the dead-letter stream's bounds, so a camera sending only poison never fills the disk:
    #: the oldest entries go first (DiscardPolicy.OLD) once either is reached.
    dlq_max_bytes: int = 256 * 1024**2
    dlq_max_msgs: int = 100_000
    #: the THERMAL stream's size (it keeps GOPs as long as VIDEO: streams.video_max_age_s).
    thermal_max_bytes: int = 1024**3

    def __post_init__(self) -> None:
        if self.storage not in ("file", "memory"):
            raise ConfigError(f"streams.storage must be 'file' or 'memory', got {self.storage!r}")
        positive(
            "streams",
            video_max_age_s=self.video_max_age_s,
            video_max_bytes=self.video_max_bytes,
            output_max_age_s=self.output_max_age_s,
            duplicate_window_s=self.duplicate_window_s,
            ledger_ttl_s=self.ledger_ttl_s,
            viewer_ttl_s=self.viewer_ttl_s,
            dlq_max_bytes=self.dlq_max_bytes,
            dlq_max_msgs=self.dlq_max_msgs,
            thermal_max_bytes=self.thermal_max_bytes,
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
        positive(
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
