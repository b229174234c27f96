"""The settings of the runtimes around the stages: the embedded local system and the web server."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from framepipe.core.errors import ConfigError
from framepipe.core.settings.bus import positive


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
        positive("local", shutdown_grace_s=self.shutdown_grace_s)
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
    #: the annotated view plays a segment this many times faster while it arrived more than
    #: catch_up_above_s before its frames were due (its clock is anchored at the worst delay
    #: seen so far otherwise); 1.0: never faster. The slack absorbs the pipeline's jitter.
    catch_up_speed: float = 1.25
    catch_up_above_s: float = 0.25

    def __post_init__(self) -> None:
        positive("webrtc", max_viewers_per_camera=self.max_viewers_per_camera, max_viewers=self.max_viewers)
        if not 1.0 <= self.catch_up_speed <= 2.0:
            raise ConfigError(f"webrtc.catch_up_speed must be 1.0 (off)..2.0, got {self.catch_up_speed}")
        if self.catch_up_above_s < 0:
            raise ConfigError(f"webrtc.catch_up_above_s must be >= 0, got {self.catch_up_above_s}")
        if self.connect_timeout_s <= 0:
            raise ConfigError(f"webrtc.connect_timeout_s must be > 0, got {self.connect_timeout_s}")
        for url in self.ice_urls:
            if not url.startswith(("stun:", "turn:", "turns:")):
                raise ConfigError(f"webrtc.ice_servers: {url!r} is not a stun:, turn: or turns: URL")

    @property
    def ice_urls(self) -> list[str]:
        return [u.strip() for u in self.ice_servers.split(",") if u.strip()]
