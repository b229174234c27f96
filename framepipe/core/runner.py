"""The stage-agnostic work loop: fetch → process → publish → ack.

A stage is a small class with a ``process`` method; this module owns the rest:
binding the durable pull consumer, decoding envelopes, heartbeats for long
work (``in_progress``), acking only after every downstream publish was acked,
retry with backoff, dead-lettering poison, graceful drain on SIGTERM, health
and metrics, and one canonical log event per unit of work.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import functools
import signal
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, ParamSpec, TypeVar

import nats.errors
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError, ServiceUnavailableError

from framepipe.core import backlog, bus, health, messages
from framepipe.core.dlq import dead_letter
from framepipe.core.errors import PoisonError
from framepipe.core.messages import Headers
from framepipe.core.settings import Settings
from framepipe.core.topology import ConsumerSpec, Names

M = TypeVar("M", bound=messages.Message)
P = ParamSpec("P")
T = TypeVar("T")
FETCH_WAIT_S = 1.0


#: a value of the ``gop.done`` log event.
LogValue = int | float | str | bool


@dataclass(frozen=True)
class Done:
    """What ``process`` reports for one input: counted in metrics, logged in ``gop.done``."""

    #: frames the message held (``framepipe_frames_total``).
    frames: int = 0
    #: False while other parts of the GOP are still outstanding, so
    #: ``framepipe_gops_total`` counts each GOP once however many parts it had.
    gop_complete: bool = True
    #: fields of the stage's own added to the ``gop.done`` event (``faces=3``).
    fields: Mapping[str, LogValue] = field(default_factory=dict)


@dataclass
class WorkContext:
    """What ``process`` may use for one input message."""

    js: JetStreamContext
    settings: Settings
    stage: str
    stream_seq: int
    deliveries: int
    log: Any
    published: int = 0

    async def publish(self, subject: str, message: messages.Message, msg_id: str) -> None:
        """Publish downstream and wait for the stream's ack (de-duplicated by id)."""
        headers, body = messages.encode(message)
        headers[Headers.STAGE] = self.stage
        await bus.publish(self.js, subject, body, headers, msg_id)
        self.published += 1
        health.PUBLISHED.labels(self.stage, Names.stream_of(subject), message.KIND).inc()


class Stage(abc.ABC, Generic[M]):
    """Override :meth:`process`; optionally :meth:`setup` and :meth:`close`.

    A stage declares the consumer it reads (one of its table entry's, see
    :mod:`framepipe.core.topology`); that entry's name is its settings section.
    State that :meth:`setup` makes is declared in ``__init__``.
    """

    #: DLQ subject (``dlq.<name>``), metric label, msg-id part and log field.
    name: ClassVar[str]
    consumer: ClassVar[ConsumerSpec]
    input_kind: ClassVar[type[messages.Message]]
    #: A cap on the section's ``in_flight`` for stages whose ``process`` must not overlap
    #: itself (per-camera state); None: ``in_flight`` as configured.
    max_in_flight: ClassVar[int | None] = None

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._worker: ThreadPoolExecutor | None = None

    async def offload(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run CPU-bound ``fn`` on this stage's single worker thread.

        The event loop meanwhile publishes and acks the other messages in flight, so
        bus round trips hide behind codec work; the work itself stays serial, so a
        replica uses the cores its codec settings say however deep ``in_flight`` is.
        """
        if self._worker is None:
            self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{self.name}-work")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._worker, functools.partial(fn, *args, **kwargs))

    def parse(self, headers: Mapping[str, str], body: bytes) -> M:
        """Decode an input message; raise a SchemaError for anything unexpected."""
        return messages.decode(headers, body, self.input_kind)  # type: ignore[return-value]

    async def setup(self, js: JetStreamContext) -> None:
        """Load models, open KV buckets... Called once, before the first fetch."""

    @abc.abstractmethod
    async def process(self, message: M, ctx: WorkContext) -> Done:
        """Handle one input; publish through ``ctx.publish``; raise to fail it."""

    async def close(self) -> None:
        """Release resources after the drain (overrides call ``super().close()``)."""
        if self._worker is not None:
            self._worker.shutdown(wait=True)
            self._worker = None


class Runner:
    def __init__(self, stage: Stage[Any], settings: Settings) -> None:
        self.stage = stage
        self.settings = settings
        self.spec = stage.consumer
        self.consumer = settings.consumer(self.spec.stage)
        self.health = health.Health()
        self.stopping = asyncio.Event()
        self.log = structlog.get_logger("framepipe.stage").bind(stage=stage.name)
        self._held: dict[int, Msg] = {}
        self.nc: Client | None = None

    def request_stop(self) -> None:
        if not self.stopping.is_set():
            if self.nc is not None:  # before the first connect, run() says it stopped instead
                self.log.info("stage.draining")
            self.stopping.set()

    async def run(self, *, serve_health: bool = True) -> None:
        if serve_health and self.consumer.metrics_port >= 0:
            port = self.health.serve(self.consumer.metrics_port, self.consumer.metrics_host)
            self.log.info("stage.health", port=port)
        self.nc = await self._connect_unless_stopped()
        if self.nc is None:
            return
        js = self.nc.jetstream(timeout=10.0)
        await self.stage.setup(js)
        sub = await self._bind(js)
        self.health.add_check("nats", lambda: self.nc is not None and self.nc.is_connected)
        self.health.ready = True
        self.log.info("stage.started", stream=self.spec.stream, consumer=self.spec.durable)
        heartbeat = asyncio.create_task(self._heartbeat())
        backlog_task = asyncio.create_task(self._sample_backlog(js))
        window = self.window()
        working: set[asyncio.Task[None]] = set()
        try:
            while not self.stopping.is_set():
                if len(working) >= window:
                    done, working = await asyncio.wait(working, return_when=asyncio.FIRST_COMPLETED)
                    _raise_failures(done)
                    continue
                try:
                    wanted = min(self.consumer.fetch_batch, window - len(working))
                    batch = await sub.fetch(wanted, timeout=FETCH_WAIT_S)
                except (TimeoutError, nats.errors.TimeoutError):
                    continue
                except (nats.errors.ConnectionClosedError, nats.errors.ConnectionReconnectingError):
                    await asyncio.sleep(0.5)
                    continue
                except (NotFoundError, ServiceUnavailableError, nats.errors.Error) as exc:
                    self.log.warning("stage.fetch_failed", error=str(exc) or type(exc).__name__)
                    await asyncio.sleep(1.0)
                    sub = await self._bind(js)
                    continue
                self._held.update((id(m), m) for m in batch)
                health.IN_FLIGHT.labels(self.stage.name).set(len(self._held))
                health.BATCH_SIZE.labels(self.stage.name, "fetch").observe(len(batch))
                working.update(asyncio.create_task(self._handle_held(js, msg)) for msg in batch)
                finished = {task for task in working if task.done()}
                working -= finished
                _raise_failures(finished)
        finally:
            # Draining: what was fetched is finished and acked before the connection closes.
            if working:
                _raise_failures(set((await asyncio.wait(working))[0]))
            heartbeat.cancel()
            backlog_task.cancel()
            self.health.ready = False
            await self.stage.close()
            # Everything handled was acked synchronously; close without a drain
            # (a drain of the pull subscription waits out its pending fetch).
            with contextlib.suppress(Exception):
                await self.nc.close()
            self.health.close()
            self.log.info("stage.stopped")

    async def _connect_unless_stopped(self) -> Client | None:
        """The first connect, given up at once on SIGTERM (it may wait up to 30 s for NATS)."""
        connect = asyncio.create_task(bus.connect(self.settings, f"framepipe-{self.stage.name}"))
        stop = asyncio.create_task(self.stopping.wait())
        await asyncio.wait({connect, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if connect.done():
            return connect.result()
        connect.cancel()
        with contextlib.suppress(BaseException):
            await connect
        self.health.close()
        self.log.info("stage.stopped_before_start", why="stopped while waiting for NATS; nothing was fetched")
        return None

    def window(self) -> int:
        """Messages this replica works on at once: ``in_flight``, capped by the stage."""
        cap = self.stage.max_in_flight
        return min(self.consumer.in_flight, cap) if cap is not None else self.consumer.in_flight

    async def _bind(self, js: JetStreamContext) -> JetStreamContext.PullSubscription:
        delay = 0.2
        while True:
            try:
                return await js.pull_subscribe_bind(durable=self.spec.durable, stream=self.spec.stream)
            except (NotFoundError, ServiceUnavailableError, nats.errors.TimeoutError) as exc:
                if self.stopping.is_set():
                    raise
                self.log.warning("stage.bind_retry", error=str(exc) or type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _heartbeat(self) -> None:
        """Keep held messages from redelivery while work is slow."""
        interval = max(self.consumer.ack_wait_s / 3.0, 0.5)
        while True:
            await asyncio.sleep(interval)
            for msg in list(self._held.values()):
                with contextlib.suppress(Exception):
                    await msg.in_progress()

    async def _sample_backlog(self, js: JetStreamContext) -> None:
        """Export the consumer's backlog (count and oldest unacked age) as JetStream sees it."""
        spec, nc = self.spec, self.nc
        labels = (self.stage.name, spec.stream, spec.durable)
        while nc is not None:
            try:
                found = await backlog.sample(nc, js, spec)
                health.BACKLOG_MESSAGES.labels(*labels).set(found.messages)
                health.BACKLOG_AGE.labels(*labels).set(round(found.oldest_age_s, 3))
            except Exception as exc:  # noqa: BLE001 - a metric must never stop the work
                self.log.debug("stage.backlog_sample_failed", error=str(exc) or type(exc).__name__)
            await asyncio.sleep(backlog.SAMPLE_INTERVAL_S)

    async def _handle_held(self, js: JetStreamContext, msg: Msg) -> None:
        await self._handle(js, msg)
        self._held.pop(id(msg), None)
        health.IN_FLIGHT.labels(self.stage.name).set(len(self._held))

    async def _handle(self, js: JetStreamContext, msg: Msg) -> None:
        meta = msg.metadata
        headers: Mapping[str, str] = msg.headers or {}
        camera = headers.get(Headers.CAMERA, "?")
        gop_header = headers.get(Headers.GOP, "")
        gop = int(gop_header) if gop_header.isdigit() else None  # logs carry gop as an int
        log = self.log.bind(camera=camera, gop=gop, seq=meta.sequence.stream)
        ctx = WorkContext(
            js=js,
            settings=self.settings,
            stage=self.stage.name,
            stream_seq=meta.sequence.stream,
            deliveries=meta.num_delivered,
            log=log,
        )
        started = time.perf_counter()
        outcome = "ok"
        done = Done()
        try:
            message = self.stage.parse(headers, msg.data)
            done = await self.stage.process(message, ctx)
            await msg.ack_sync(timeout=10.0)
        except PoisonError as exc:
            outcome = "dead-letter"
            await self._dead_letter(js, msg, exc, log)
        except Exception as exc:  # noqa: BLE001 - any failure must not crash the stage
            if meta.num_delivered >= self.consumer.max_deliver:
                outcome = "dead-letter"
                await self._dead_letter(js, msg, exc, log)
            else:
                outcome = "retry"
                health.ERRORS.labels(self.stage.name, type(exc).__name__).inc()
                delay = self.consumer.retry_backoff_s * 2 ** (meta.num_delivered - 1)
                log.warning(
                    "gop.retry",
                    error=f"{type(exc).__name__}: {exc}"[:300],
                    deliveries=meta.num_delivered,
                    retry_in_s=round(delay, 2),
                )
                with contextlib.suppress(Exception):
                    await msg.nak(delay=delay)
        duration = time.perf_counter() - started
        health.MESSAGES.labels(self.stage.name, outcome).inc()
        health.PROCESS_SECONDS.labels(self.stage.name).observe(duration)
        if outcome != "ok":
            return
        if done.frames:
            health.FRAMES.labels(self.stage.name).inc(done.frames)
            health.CAMERA_FRAMES.labels(self.stage.name, camera).inc(done.frames)
        if done.gop_complete:
            health.GOPS.labels(self.stage.name).inc()
        # One gop.done per GOP per stage: a message that is one part of a GOP (inference works
        # on parts) logs part.done (debug: the benches read it) until the part that completes it.
        (log.info if done.gop_complete else log.debug)(
            "gop.done" if done.gop_complete else "part.done",
            duration_ms=round(duration * 1000, 1),
            frames=done.frames,
            published=ctx.published,
            gop_complete=done.gop_complete,
            **done.fields,
        )

    async def _dead_letter(self, js: JetStreamContext, msg: Msg, exc: Exception, log: Any) -> None:
        reason = exc.reason if isinstance(exc, PoisonError) else "retries-exhausted"
        await dead_letter(js, self.stage.name, msg, reason, f"{type(exc).__name__}: {exc}")
        health.DEAD_LETTERS.labels(self.stage.name, reason).inc()
        health.ERRORS.labels(self.stage.name, reason).inc()
        log.error(
            "gop.dead_letter",
            reason=reason,
            error=f"{type(exc).__name__}: {exc}"[:300],
            deliveries=msg.metadata.num_delivered,
            dlq_subject=Names.dlq_subject(self.stage.name),
        )
        with contextlib.suppress(Exception):
            await msg.term()


def _raise_failures(done: set[asyncio.Task[None]]) -> None:
    """``_handle`` contains every message's failure; anything escaping it ends the stage."""
    for task in done:
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]


def _stop_all(runners: list[Runner]) -> None:
    for runner in runners:
        runner.request_stop()


async def run_runners(runners: list[Runner]) -> None:
    """Run one or more consumers in this process; SIGTERM/SIGINT drain them all."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, _stop_all, runners)
    tasks = [asyncio.create_task(r.run(serve_health=i == 0)) for i, r in enumerate(runners)]
    done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    for runner in runners:
        runner.request_stop()
    await asyncio.gather(*pending, return_exceptions=True)
    for task in done:
        task.result()


def run_stage(stages: list[Stage[Any]], settings: Settings) -> None:
    """Entry point of a stage process."""
    asyncio.run(run_runners([Runner(stage, settings) for stage in stages]))
