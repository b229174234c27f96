"""The embedded NATS of the local system: one server, or a 3-node JetStream cluster.

:class:`NatsNodes` is what the supervisor holds. It starts the servers, tells
clients where they are (every node's URL, comma-separated, so a client fails
over), and restarts a node that died on its own ports with its own store
directory, the way a StatefulSet brings a pod back on its volume. A cluster
runs on loopback with routes between the nodes, one store directory each
(``<state_dir>/nats-cluster/n<i>/jetstream``); a single server keeps
``<state_dir>/jetstream``.
"""

from __future__ import annotations

import contextlib
import json
import signal
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from framepipe.core.auth import LocalAuth, forget_url, save_local_auth
from framepipe.core.errors import SetupError
from framepipe.core.settings import Settings
from framepipe.local.natsserver import NatsServer, free_port

log = structlog.get_logger("framepipe.nats")
CLUSTER_NAME = "framepipe-local"
CLUSTER_DIR = "nats-cluster"


@dataclass
class ClusterNode(NatsServer):
    """One server of a loopback cluster: a name, a route port and routes to every node."""

    server_name: str = ""
    cluster_port: int = 0
    routes: tuple[str, ...] = ()

    def config_text(self) -> str:
        routes = ", ".join(f'"{route}"' for route in self.routes)
        return (
            super().config_text()
            + f'server_name: "{self.server_name}"\n'
            + "cluster {\n"
            + f'  name: "{CLUSTER_NAME}"\n'
            + f"  listen: {self.host}:{self.cluster_port}\n"
            + f"  routes: [{routes}]\n"
            # Loopback peers answer at once: elect and reconnect quickly after a fault.
            + "  connect_retries: 120\n"
            + "}\n"
        )


@dataclass
class NatsNodes:
    """The servers the supervisor runs (1 or 3), restarted when they crash."""

    nodes: list[NatsServer]
    log_dir: Path | None = None
    #: where the local client profile (URLs, CA, passwords) is kept while a cluster runs.
    auth_dir: Path | None = None
    restarts: dict[str, int] = field(default_factory=dict)

    @classmethod
    def local(cls, settings: Settings, state_dir: Path, *, count: int | None = None) -> NatsNodes:
        """The local system's servers, with auth and TLS as ``[local]`` says."""
        count = count or settings.local.nats_cluster
        base = NatsServer.local(settings, state_dir)
        base.max_file_store = settings.local.nats_max_file_store
        if count == 1:
            return cls([base], state_dir / "logs")
        return cls(cluster_nodes(base, state_dir / CLUSTER_DIR, count), state_dir / "logs", base.auth_dir)

    # -- what clients need --------------------------------------------------
    @property
    def url(self) -> str:
        return ",".join(node.url for node in self.nodes)

    @property
    def monitor_url(self) -> str:
        return self.nodes[0].monitor_url

    @property
    def monitor_urls(self) -> list[str]:
        return [node.monitor_url for node in self.nodes]

    @property
    def passwords(self) -> dict[str, str] | None:
        return self.nodes[0].passwords

    def client_settings(self, settings: Settings) -> Settings:
        """``settings`` pointed at every node as the admin user, streams replicated per node count."""
        pointed = self.nodes[0].client_settings(settings)
        replicas = settings.streams.replicas_for(len(self.nodes))
        return pointed.replace(nats={"url": self.url}, streams={"replicas": replicas})

    # -- lifecycle -----------------------------------------------------------
    def log_file(self, node: NatsServer) -> Path | None:
        if self.log_dir is None:
            return None
        name = node.server_name if isinstance(node, ClusterNode) else ""
        return self.log_dir / (f"nats-server-{name}.log" if name else "nats-server.log")

    def start(self, timeout: float = 30.0) -> NatsNodes:
        if len(self.nodes) == 1:
            self.nodes[0].start(log_file=self.log_file(self.nodes[0]), timeout=timeout)
            return self
        for node in self.nodes:
            node.start(log_file=self.log_file(node), timeout=timeout)
        self.wait_healthy(timeout)
        if self.auth_dir is not None:
            tls = self.nodes[0].tls
            profile = LocalAuth(self.url, self.passwords or {}, str(tls.ca) if tls else "")
            save_local_auth(self.auth_dir, profile)
        return self

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Until every node says it is healthy (JetStream meta leader known, streams current)."""
        deadline = time.monotonic() + timeout
        pending = list(self.nodes)
        while pending:
            pending = [node for node in pending if not healthy(node)]
            if not pending:
                return
            if time.monotonic() > deadline:
                names = ", ".join(node_name(node) for node in pending)
                raise SetupError(
                    f"NATS cluster nodes {names} not healthy after {timeout:.0f}s; see {self.log_dir}"
                )
            time.sleep(0.2)

    def restart_crashed(self) -> list[str]:
        """Start again, on the same ports and store directory, every node that exited."""
        restarted: list[str] = []
        for node in self.nodes:
            if node.process is None or node.process.poll() is None:
                continue
            name = node_name(node)
            code = node.process.returncode
            self.restarts[name] = self.restarts.get(name, 0) + 1
            log.warning("nats.restarted", node=name, exit_code=code, restarts=self.restarts[name])
            try:
                node.start(log_file=self.log_file(node))
            except SetupError as exc:  # tried again on the next supervising pass
                log.error("nats.restart_failed", node=name, error=str(exc))
                continue
            restarted.append(name)
        return restarted

    def stop(self) -> None:
        if self.auth_dir is not None and len(self.nodes) > 1:
            forget_url(self.auth_dir)
        for node in reversed(self.nodes):
            node.stop()

    def kill(self, index: int) -> None:
        self.nodes[index].kill()

    def signal(self, index: int, sig: signal.Signals) -> None:
        process = self.nodes[index].process
        if process is not None and process.poll() is None:
            process.send_signal(sig)

    def index_of(self, name: str) -> int:
        return next(i for i, node in enumerate(self.nodes) if node_name(node) == name)


def cluster_nodes(template: NatsServer, directory: Path, count: int) -> list[NatsServer]:
    """``count`` nodes on free loopback ports, each routed to all the others."""
    host = template.host
    cluster_ports = [free_port(host) for _ in range(count)]
    routes = tuple(f"nats://{host}:{port}" for port in cluster_ports)
    nodes: list[NatsServer] = []
    for index, cluster_port in enumerate(cluster_ports):
        nodes.append(
            ClusterNode(
                store_dir=directory / f"n{index}" / "jetstream",
                port=free_port(host),
                monitor_port=free_port(host),
                max_payload=template.max_payload,
                sync_interval=template.sync_interval,
                max_file_store=template.max_file_store,
                passwords=template.passwords,
                tls=template.tls,
                # NatsNodes keeps the local client profile (every node's URL), not a node.
                auth_dir=None,
                host=host,
                server_name=f"n{index}",
                cluster_port=cluster_port,
                routes=tuple(r for r in routes if r != f"nats://{host}:{cluster_port}"),
            )
        )
    return nodes


def node_name(node: NatsServer) -> str:
    return node.server_name if isinstance(node, ClusterNode) and node.server_name else f"nats-{node.port}"


def healthy(node: NatsServer, timeout: float = 1.0) -> bool:
    url = f"{node.monitor_url}/healthz"
    with contextlib.suppress(OSError, ValueError), urllib.request.urlopen(url, timeout=timeout) as response:
        return bool(response.status == 200)
    return False


def monitor_json(monitor_url: str, path: str, timeout: float = 2.0) -> dict[str, Any]:
    with urllib.request.urlopen(f"{monitor_url}{path}", timeout=timeout) as response:
        payload: dict[str, Any] = json.loads(response.read())
        return payload


def stream_placement(cluster: Any) -> dict[str, str]:
    """A stream's leader and each follower's state (``n1 lag 0``), for ``framepipe status``.

    ``cluster`` is a StreamInfo's ``cluster`` (None on a server without clustering).
    """
    if cluster is None or not cluster.name:
        return {"leader": cluster.leader or "" if cluster else "", "replicas": ""}
    followers = []
    for peer in cluster.replicas or ():
        state = "offline" if peer.offline else ("current" if peer.current else "catching up")
        followers.append(f"{peer.name} {state} lag {peer.lag or 0}")
    return {"leader": cluster.leader or "none (no quorum)", "replicas": ", ".join(followers)}
