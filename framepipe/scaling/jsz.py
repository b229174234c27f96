"""The lag trigger's metric, read from the NATS monitoring endpoint as KEDA reads it.

KEDA's ``nats-jetstream`` scaler asks ``/jsz?acc=<account>&consumers=true&config=true``
and reports ``num_pending + num_ack_pending`` of one durable consumer. It keeps
only the account whose name or id is the trigger's ``account``. A consumer
that is not there is an error for that trigger alone: the stream's last
sequence is never used instead (kedacore/keda #7657 scaled to max that way).

In a clustered NATS only the consumer's leader knows its current counts, so
when ``meta_cluster.cluster_size > 1`` the scaler finds the leader: it asks
``/varz`` for the nodes (``connect_urls``, else the route ``cluster.urls``),
asks each node's ``/varz`` for its ``server_name`` and ``/jsz`` for the
consumer, and keeps the answer of the node whose name is the consumer's
``cluster.leader``. The leader's URL is remembered until an answer from it no
longer has the consumer or names another leader. Nodes that do not answer (a
node is down, or restarting) are skipped, with one warning when a node stops
answering and one line when it is back, not one per poll. When no answering
node is the leader (an election under way, the leader hung or just died), the
stage has no figure for that poll: a follower's ``num_pending`` is not kept
current (nats-server 2.15 reports 0 pending on followers of a consumer with 3
pending, see tests/scaling/test_jsz_cluster.py), so using it would scale down
on a backlog.

In Kubernetes the node hosts come from ``/varz`` and the monitoring port from
the trigger's endpoint. On one machine the nodes share 127.0.0.1 and differ by
port, so :class:`JszReader` also takes the nodes' monitoring URLs directly.
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from framepipe.core.errors import BusError
from framepipe.core.topology import SCALED_STAGES, stage_spec

log = structlog.get_logger("framepipe.autoscale")
Payload = Mapping[str, Any]


@dataclass(frozen=True)
class ConsumerLag:
    stream: str
    consumer: str
    num_pending: int
    num_ack_pending: int
    leader: str = ""

    @property
    def lag(self) -> int:
        """What KEDA's nats-jetstream scaler reports: not yet delivered + delivered, unacked."""
        return self.num_pending + self.num_ack_pending


def jsz_url(monitor_url: str, account: str | None = None) -> str:
    query = {"consumers": "true", "config": "true"}
    if account:
        query["acc"] = account
    else:
        query["accounts"] = "true"
    return f"{monitor_url.rstrip('/')}/jsz?{urllib.parse.urlencode(query)}"


def _account_matches(detail: Payload, account: str | None) -> bool:
    return account is None or account in (detail.get("name"), detail.get("id"))


def parse_jsz(payload: Payload, stream: str, consumer: str, account: str | None = None) -> ConsumerLag | None:
    """One consumer's lag in a ``/jsz`` answer (only ``account``, by name or id, if given)."""
    for detail in payload.get("account_details") or []:
        if not _account_matches(detail, account):
            continue
        for stream_detail in detail.get("stream_detail") or []:
            if stream_detail.get("name") != stream:
                continue
            for found in stream_detail.get("consumer_detail") or []:
                if found.get("name") == consumer:
                    return ConsumerLag(
                        stream,
                        consumer,
                        int(found.get("num_pending") or 0),
                        int(found.get("num_ack_pending") or 0),
                        str((found.get("cluster") or {}).get("leader") or ""),
                    )
    return None


def cluster_size(payload: Payload) -> int:
    return int((payload.get("meta_cluster") or {}).get("cluster_size") or 0)


def _get_json(url: str, timeout: float) -> Payload:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            data = json.loads(response.read())
    except (OSError, ValueError) as exc:
        raise BusError(f"cannot read {url}: {exc}") from None
    if not isinstance(data, dict):
        raise BusError(f"{url} did not answer a JSON object")
    return data


def node_monitor_urls(base_url: str, varz: Payload) -> list[str]:
    """Monitoring URLs of the cluster's nodes as KEDA derives them from ``/varz``:
    the host of each advertised client URL with the base URL's port, or, with
    nothing advertised, ``<node>.<base host>`` for the first label of each route URL."""
    base = urllib.parse.urlsplit(base_url)
    port = f":{base.port}" if base.port else ""
    advertised = [str(u) for u in varz.get("connect_urls") or []]
    if advertised:
        hosts = [u.rsplit(":", 1)[0] if ":" in u else u for u in advertised]
        return [f"{base.scheme}://{host}{port}" for host in hosts]
    routes = [str(u) for u in (varz.get("cluster") or {}).get("urls") or []]
    return [f"{base.scheme}://{u.split('.', 1)[0]}.{base.netloc}" for u in routes]


@dataclass
class JszReader:
    """Reads each scaled stage's consumer lag, from the consumer's leader when clustered."""

    monitor_url: str
    account: str | None = None
    #: the nodes' monitoring URLs, when /varz cannot name them (one machine, many ports).
    nodes: tuple[str, ...] = ()
    timeout: float = 5.0
    #: consumer → the monitoring URL of its leader, as last found.
    leaders: dict[str, str] = field(default_factory=dict)
    #: monitoring URL → server_name (a node keeps its name across restarts).
    names: dict[str, str] = field(default_factory=dict)
    #: nodes that did not answer the last time they were asked (warned once).
    down: set[str] = field(default_factory=set)
    #: stage → the error last logged for it (logged again only when it changes).
    unavailable: dict[str, str] = field(default_factory=dict)

    def read(self, stages: tuple[str, ...] = SCALED_STAGES) -> dict[str, ConsumerLag | None]:
        """Each stage's lag; ``None`` (and one log line) where its consumer cannot be read.

        Raises :class:`BusError` only when no node's endpoint answers.
        """
        cache: dict[str, Payload | None] = {}
        base = self._base(cache)
        out: dict[str, ConsumerLag | None] = {}
        for stage in stages:
            spec = stage_spec(stage).consumer
            try:
                out[stage] = self._one(spec.stream, spec.durable, base, cache)
            except BusError as exc:
                if self.unavailable.get(stage) != str(exc):
                    log.warning("autoscale.lag_unavailable", stage=stage, error=str(exc))
                self.unavailable[stage] = str(exc)
                out[stage] = None
            else:
                if self.unavailable.pop(stage, None) is not None:
                    log.info("autoscale.lag_available", stage=stage)
        # A down node no consumer needed this poll is asked anyway (one request each), so its
        # node_back line comes when it is back, not whenever a leader next moves to it.
        for url in sorted(self.down - cache.keys()):
            self._jsz(url, cache)
        return out

    def _base(self, cache: dict[str, Payload | None]) -> Payload:
        """The first answer of the endpoint, else of any known node."""
        candidates = [self.monitor_url, *(url for url in self.nodes if url != self.monitor_url)]
        for url in candidates:
            payload = self._jsz(url, cache)
            if payload is not None:
                return payload
        raise BusError(f"no NATS monitoring endpoint answers ({', '.join(candidates)}); is NATS running?")

    def _jsz(self, url: str, cache: dict[str, Payload | None]) -> Payload | None:
        """``url``'s /jsz, or ``None`` if the node does not answer (logged when that changes)."""
        if url not in cache:
            try:
                cache[url] = _get_json(jsz_url(url, self.account), self.timeout)
            except BusError as exc:
                cache[url] = None
                if url not in self.down:
                    self.down.add(url)
                    log.warning(
                        "autoscale.node_unreachable",
                        node=url,
                        error=str(exc),
                        hint="reading the consumers' lag from the other NATS nodes until it answers",
                    )
            else:
                if url in self.down:
                    self.down.discard(url)
                    log.info("autoscale.node_back", node=url)
        return cache[url]

    def _one(
        self, stream: str, consumer: str, base: Payload, cache: dict[str, Payload | None]
    ) -> ConsumerLag:
        key = f"{stream}/{consumer}"
        cached = self.leaders.get(key)
        if cached:
            payload = self._jsz(cached, cache)
            found = None if payload is None else parse_jsz(payload, stream, consumer, self.account)
            if found is not None and self._name(cached) == found.leader:
                return found
            del self.leaders[key]  # the leader moved, died or the consumer went: look again
        if cluster_size(base) <= 1:
            found = parse_jsz(base, stream, consumer, self.account)
            if found is None:
                raise BusError(f"consumer {key} is not in {self.monitor_url}/jsz; run `framepipe setup`")
            return found
        reported = False
        for url in self._node_urls():
            payload = self._jsz(url, cache)
            answer = None if payload is None else parse_jsz(payload, stream, consumer, self.account)
            if answer is None:
                continue
            reported = True
            if answer.leader and self._name(url) == answer.leader:
                self.leaders[key] = url
                return answer
        if reported:  # followers' num_pending is not current: no figure rather than a wrong one
            raise BusError(
                f"no answering NATS node leads consumer {key} (an election is under way or its "
                "leader is down); its lag is read again once a leader answers"
            )
        raise BusError(f"no node of the NATS cluster at {self.monitor_url} reports consumer {key}")

    def _node_urls(self) -> list[str]:
        if self.nodes:
            return list(self.nodes)
        return node_monitor_urls(
            self.monitor_url, _get_json(f"{self.monitor_url.rstrip('/')}/varz", self.timeout)
        )

    def _name(self, url: str) -> str:
        if url not in self.names:
            try:
                varz = _get_json(f"{url.rstrip('/')}/varz", self.timeout)
            except BusError:
                return ""  # it answered /jsz a moment ago; asked again next time
            self.names[url] = str(varz.get("server_name") or "")
        return self.names[url]


def fetch_lags(
    monitor_url: str,
    stages: tuple[str, ...] = SCALED_STAGES,
    *,
    account: str | None = None,
    timeout: float = 5.0,
    nodes: tuple[str, ...] = (),
) -> dict[str, ConsumerLag | None]:
    """Lag of each stage's durable consumer (one-shot :class:`JszReader`)."""
    return JszReader(monitor_url, account, nodes=nodes, timeout=timeout).read(stages)
