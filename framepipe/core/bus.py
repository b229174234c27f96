"""NATS JetStream access: connection, topology (streams/consumers/KV), publish.

``ensure_topology`` is the single code path that creates every stream,
consumer and bucket, used by the local supervisor, the tests and the
Kubernetes setup Job alike. It is idempotent: existing objects are updated to
the configured settings.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import nats
import structlog
from nats.aio.client import Client
from nats.errors import NoServersError, TimeoutError
from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js.errors import NotFoundError
from nats.js.kv import KeyValue

from framepipe.core.auth import client_credentials
from framepipe.core.errors import BusError, UnreachableError
from framepipe.core.messages import Headers
from framepipe.core.settings import Settings
from framepipe.core.topology import BUCKETS, STREAMS, BucketSpec, ConsumerSpec, StreamSpec, consumer_specs

log = structlog.get_logger("framepipe.bus")
T = TypeVar("T")


#: how long a process waits for NATS at its start before it fails (exit 3).
FIRST_CONNECT_WAIT_S = 30.0


async def connect(settings: Settings, name: str, *, retry_initial: bool = True) -> Client:
    """Connect with unlimited reconnects; the first connect is retried briefly."""

    clients: list[Client] = []

    async def on_disconnect() -> None:
        # close() fires this callback too; only an unplanned loss is worth a warning.
        if clients and (clients[0].is_closed or clients[0].is_draining):
            return
        log.warning("nats.disconnected", client=name)

    #: the errors already logged during this outage: a reconnect loop repeats the same one every
    #: 0.5 s, so each is logged once until the connection is back.
    said: set[str] = set()

    async def on_reconnect() -> None:
        said.clear()
        log.info("nats.reconnected", client=name)

    first_errors: list[Exception] = []

    async def on_error(exc: Exception) -> None:
        if not clients:
            first_errors.append(exc)  # failed first connects end in one BusError below, not a log flood
            if isinstance(exc, ssl.SSLError):
                raise exc  # out of nats.connect now: after a failed handshake its close never returns
            return
        error = str(exc) or type(exc).__name__
        if error not in said:
            said.add(error)
            log.warning("nats.error", client=name, error=error)

    # Credentials: explicit settings, else the local server's admin (never sent elsewhere).
    user, password, tls_ca = client_credentials(settings)
    scheme, _, rest = settings.nats.url.partition("://")
    where = f"{scheme}://{rest.rsplit('@', 1)[-1]}"  # a URL's password never reaches a message
    auth: dict[str, Any] = {"user": user, "password": password} if user else {}
    if tls_ca or settings.nats.tls_cert or scheme == "tls":
        pem = {"tls_ca": tls_ca, "tls_cert": settings.nats.tls_cert, "tls_key": settings.nats.tls_key}
        for key, path in pem.items():
            if path and not os.path.isfile(path):
                raise BusError(f"nats.{key} {path} does not exist: set FRAMEPIPE_NATS__{key.upper()}")
        tls = ssl.create_default_context(cafile=tls_ca or None)
        if settings.nats.tls_cert:
            tls.load_cert_chain(settings.nats.tls_cert, settings.nats.tls_key)
        auth["tls"] = tls

    deadline = asyncio.get_running_loop().time() + (FIRST_CONNECT_WAIT_S if retry_initial else 0.0)
    waiting_said = False
    while True:
        try:
            client = await nats.connect(
                server_urls(settings.nats.url),
                name=name,
                **auth,
                connect_timeout=settings.nats.connect_timeout_s,
                # Bounded for the first connect (our loop below decides on retries);
                # switched to unlimited once connected, so a running stage rides
                # out a NATS restart.
                max_reconnect_attempts=1,
                reconnect_time_wait=0.5,
                allow_reconnect=True,
                ping_interval=settings.nats.ping_interval_s,
                max_outstanding_pings=3,
                pending_size=2 * settings.nats.max_payload,
                disconnected_cb=on_disconnect,
                reconnected_cb=on_reconnect,
                error_cb=on_error,
            )
            client.options["max_reconnect_attempts"] = -1
            clients.append(client)
            return client
        except (NoServersError, OSError, TimeoutError, nats.errors.Error) as exc:
            # The client reports why a server refused us through error_cb, then NoServersError.
            seen = [exc, *first_errors]
            first_errors.clear()
            tls_error = next((e for e in seen if isinstance(e, ssl.SSLError)), None)
            if tls_error is not None:
                raise BusError(
                    f"TLS to NATS at {where} failed ({tls_error.reason or type(tls_error).__name__}): set "
                    "FRAMEPIPE_NATS__TLS_CA to the CA that signed the server's certificate "
                    f"(local server: {settings.local.state_dir}/tls/ca.pem)"
                ) from None
            if any(_refused(e) for e in seen):
                who = f"user {user!r}" if user else "an anonymous client"
                raise BusError(
                    f"NATS at {where} refused {who} (authorization violation): set FRAMEPIPE_NATS__USER "
                    f"and FRAMEPIPE_NATS__PASSWORD (local server: {settings.local.state_dir}/nats-auth.json)"
                ) from None
            if not isinstance(exc, (NoServersError, OSError, TimeoutError)):
                raise
            if asyncio.get_running_loop().time() >= deadline:
                raise UnreachableError(
                    f"cannot reach NATS at {where}: {exc or type(exc).__name__}; "
                    "is nats-server running? (`framepipe run` starts one for you)"
                ) from None
            if not waiting_said:  # once: what this process waits for, and for how long
                waiting_said = True
                log.warning(
                    "nats.waiting",
                    client=name,
                    url=where,
                    error=str(exc) or type(exc).__name__,
                    gives_up_in_s=round(deadline - asyncio.get_running_loop().time()),
                )
            await asyncio.sleep(0.5)


def server_urls(url: str) -> list[str]:
    """``nats.url`` may list several servers of one cluster, comma-separated: the client
    connects to any that answers and fails over to the others."""
    return [part.strip() for part in url.split(",") if part.strip()]


def _refused(exc: Exception) -> bool:
    """The server turned our credentials down (not worth retrying)."""
    return isinstance(exc, nats.errors.AuthorizationError) or "authorization violation" in str(exc).lower()


def _storage(settings: Settings) -> js_api.StorageType:
    return js_api.StorageType.FILE if settings.streams.storage == "file" else js_api.StorageType.MEMORY


def _limit(settings: Settings, field: str | None) -> Any:
    return getattr(settings.streams, field) if field else None


def stream_config(spec: StreamSpec, settings: Settings) -> js_api.StreamConfig:
    """The JetStream config of one stream of the topology table, limits from ``[streams]``."""
    retention = js_api.RetentionPolicy.WORK_QUEUE if spec.work_queue else js_api.RetentionPolicy.LIMITS
    max_bytes = _limit(settings, spec.max_bytes_setting)
    return js_api.StreamConfig(
        name=spec.name,
        subjects=list(spec.subjects),
        retention=retention,
        storage=_storage(settings),
        max_age=_limit(settings, spec.max_age_setting),
        max_bytes=max_bytes if max_bytes else -1,
        max_msg_size=settings.nats.max_payload,
        duplicate_window=settings.streams.duplicate_window_s,
        # 0 (auto) is resolved to the node count by whoever starts the servers; unknown here: 1.
        num_replicas=settings.streams.replicas or 1,
        max_msgs=_limit(settings, spec.max_msgs_setting) or -1,
        allow_direct=True,
        discard=js_api.DiscardPolicy.OLD,
    )


def consumer_config(spec: ConsumerSpec, settings: Settings) -> js_api.ConsumerConfig:
    stage = settings.consumer(spec.stage)
    return js_api.ConsumerConfig(
        durable_name=spec.durable,
        ack_policy=js_api.AckPolicy.EXPLICIT,
        deliver_policy=js_api.DeliverPolicy.ALL,
        ack_wait=stage.ack_wait_s,
        max_ack_pending=stage.max_ack_pending,
        # Unlimited at the server: the runner dead-letters after max_deliver
        # itself, so a message is never silently dropped by the server.
        max_deliver=-1,
        filter_subject=spec.filter_subject,
    )


async def ensure_topology(js: JetStreamContext, settings: Settings) -> None:
    """Create or update every stream, consumer and KV bucket."""
    for spec in STREAMS:
        config = stream_config(spec, settings)
        try:
            try:
                await js.stream_info(spec.name)
                await js.update_stream(config)
            except NotFoundError:
                await js.add_stream(config)
        except nats.js.errors.APIError as exc:
            if exc.err_code not in FULL_STORE_CODES:
                raise
            # JetStream reserves a stream's max_bytes up front: say which limit does not fit.
            raise BusError(
                f"JetStream cannot reserve stream {spec.name} (max_bytes {config.max_bytes}): "
                f"{exc.description}; lower streams.{spec.max_bytes_setting or 'video_max_bytes'} "
                "or give the server more store (max_file_store, local.nats_max_file_store)"
            ) from None
    for consumer in consumer_specs():
        await js.add_consumer(consumer.stream, consumer_config(consumer, settings))
    for bucket in BUCKETS:
        await _ensure_bucket(js, bucket, settings)


async def _ensure_bucket(js: JetStreamContext, bucket: BucketSpec, settings: Settings) -> None:
    """Create the bucket, or switch an existing one's direct reads to what its spec says
    (buckets made by builds before ``direct_reads`` answered every get through the API)."""
    try:
        info = await js.stream_info(f"KV_{bucket.name}")
    except NotFoundError:
        await js.create_key_value(
            js_api.KeyValueConfig(
                bucket=bucket.name,
                history=1,
                ttl=float(_limit(settings, bucket.ttl_setting) or 0.0),
                storage=_storage(settings),
                replicas=settings.streams.replicas or 1,
                direct=bucket.direct_reads,
            )
        )
        return
    if bool(info.config.allow_direct) != bucket.direct_reads:
        await js.update_stream(dataclasses.replace(info.config, allow_direct=bucket.direct_reads))


async def setup_topology(settings: Settings) -> None:
    """Connect, create or update the whole topology, disconnect (``framepipe setup``, the Job)."""
    nc = await connect(settings, "framepipe-setup")
    try:
        await ensure_topology(nc.jetstream(timeout=10.0), settings)
    finally:
        await nc.close()


async def key_value(js: JetStreamContext, bucket: str) -> KeyValue:
    return await js.key_value(bucket)


# What a client sees while JetStream is restarting or electing: worth retrying.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.ConnectionReconnectingError,
    nats.js.errors.NoStreamResponseError,
    nats.js.errors.ServiceUnavailableError,
)
#: JetStream API error codes that clear by themselves: the stream has no leader or quorum
#: yet (10008 cluster not available, 10009 cluster not active, 10015 peer gone, 10071 raft
#: busy) or the store is full (10023 insufficient resources, 10047 storage resources), and
#: 10158 "duplicate message id is in process": a retry arrived while the first attempt of
#: the same msg id is still being replicated (seen in a cluster after a timeout); the next
#: try answers "duplicate" once it is stored.
TRANSIENT_API_CODES = frozenset({10008, 10009, 10015, 10023, 10047, 10071, 10158})
FULL_STORE_CODES = frozenset({10023, 10047})


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, TRANSIENT_ERRORS):
        return True
    return isinstance(exc, nats.js.errors.APIError) and exc.err_code in TRANSIENT_API_CODES


def outage_reason(exc: BaseException) -> str:
    """What a transient error most likely means, for the one line a waiting client logs."""
    if isinstance(exc, nats.js.errors.APIError) and exc.err_code in FULL_STORE_CODES:
        return "JetStream store full: free disk space or raise max_file_store / stream limits"
    if isinstance(exc, nats.errors.ConnectionReconnectingError):
        return "NATS connection lost: reconnecting"
    return "JetStream not answering (server restarting, or no quorum/leader for the stream)"


async def retry_transient(
    call: Callable[[], Awaitable[T]],
    what: str,
    *,
    attempts: int | None = 8,
    max_delay_s: float = 3.0,
) -> T:
    """Run ``call`` until it succeeds, retrying only transient errors (see :func:`_transient`).

    ``call`` must be safe to repeat (msg-id de-duplicated publish, KV put of a
    full value). With ``attempts=None`` it waits as long as the outage lasts (a
    restart, an election, a lost quorum, a full store), logging one ``bus.waiting``
    line when the wait starts and one ``bus.resumed`` when it ends, so a stage
    neither spins through its input's deliveries nor floods its log. Otherwise
    the last error propagates once the attempts are spent.
    """
    delay = 0.2
    attempt = 0
    waiting_since: float | None = None
    while True:
        attempt += 1
        try:
            result = await call()
        except Exception as exc:
            if not _transient(exc) or (attempts is not None and attempt >= attempts):
                raise
            if waiting_since is None:
                waiting_since = time.monotonic()
                log.warning("bus.waiting", what=what, error=type(exc).__name__, reason=outage_reason(exc))
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay_s)
            continue
        if waiting_since is not None:
            log.info("bus.resumed", what=what, waited_s=round(time.monotonic() - waiting_since, 2))
        return result


async def publish(
    js: JetStreamContext,
    subject: str,
    body: bytes,
    headers: Mapping[str, str],
    msg_id: str,
    *,
    timeout: float = 10.0,
    attempts: int | None = None,
) -> js_api.PubAck:
    """Publish with server-side de-duplication, retrying transient errors (same msg id).

    By default it waits out an outage however long (see :func:`retry_transient`): a
    stage's input stays held (heartbeats) and a file source pauses, losing nothing.
    """
    all_headers = dict(headers)
    all_headers[Headers.MSG_ID] = msg_id

    async def once() -> js_api.PubAck:
        return await js.publish(subject, body, timeout=timeout, headers=all_headers)

    return await retry_transient(once, f"publish {subject}", attempts=attempts)


async def kv_put(kv: KeyValue, key: str, value: bytes, *, attempts: int | None = None) -> int:
    """Put a whole value (idempotent), retrying transient errors; returns the revision."""

    async def once() -> int:
        return await kv.put(key, value)

    return await retry_transient(once, f"kv put {key}", attempts=attempts)


async def bucket_keys(js: JetStreamContext, bucket: str) -> list[str]:
    """The keys of KV ``bucket``, from its stream's subjects: one request, no watcher.

    nats-py's ``kv.keys()`` opens a watcher and ends it when the consumer reports nothing
    pending; under load the server has already sent the keys but the client has not yet
    handled them, so it can answer "no keys" for a full bucket (seen in CI). It also leaves
    the watcher behind if NATS goes away mid-call. A deleted key's subject holds its delete
    marker, so a key listed here may be gone: ``kv.get`` of it raises ``KeyNotFoundError``.
    Raises ``NotFoundError`` when the bucket does not exist, as ``js.key_value`` does.
    """
    prefix = f"$KV.{bucket}."
    info = await js.stream_info(f"KV_{bucket}", subjects_filter=f"{prefix}>")
    return [subject.removeprefix(prefix) for subject in (info.state.subjects or {})]


async def stored_msg(js: JetStreamContext, stream: str, seq: int) -> js_api.RawStreamMsg:
    """Message ``seq`` of ``stream``, read the cheap way: a direct get (raw bytes; any replica
    answers) rather than the stream API's JSON with the body in base64. For a 60 kB GOP that
    is 0.5 of 0.8 CPU ms per read, client and server together. A replica that has not yet
    stored ``seq`` answers "not found", so that answer is checked with the stream's leader.
    Raises ``NotFoundError`` when the stream no longer holds ``seq``."""
    try:
        return await js.get_msg(stream, seq, direct=True)
    except NotFoundError:
        return await js.get_msg(stream, seq)
