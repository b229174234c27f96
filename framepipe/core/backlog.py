"""Backlog of a durable consumer: how many messages wait, and how old the oldest one is.

Counts (``num_pending + num_ack_pending``) say how much work waits; the age of the
oldest unacknowledged message says how late the stage is, whatever its rate. Both
come from what JetStream reports, never from this process's own view:

* no message pending or unacked (``num_pending + num_ack_pending == 0``): age 0;
* a work-queue stream (FRAMES, ENCODE) deletes what its one consumer acked, so its
  first stored message *is* the oldest unacked one: age = now − ``state.first_ts``
  of the stream info (``$JS.API.STREAM.INFO``, read raw: nats-py's ``StreamState``
  drops ``first_ts``; no message body is fetched, and FRAMES bodies are megabytes);
* a limits stream (VIDEO, OUTPUT, DLQ) keeps acked messages: the consumer's
  ``ack_floor.stream_seq`` is the last sequence below which everything is acked, so
  the oldest unacked message is the first one at ``ack_floor + 1`` or later on the
  consumer's filter subject (``STREAM.MSG.GET`` with ``next_by_subj``): age = now − its
  stored time. A message the stream's limits removed unacked is skipped that way, as
  it can no longer be delivered.

The runner samples its consumers every :data:`SAMPLE_INTERVAL_S` into
``framepipe_backlog_messages`` and ``framepipe_backlog_age_seconds``; every replica
reports the same value, so queries take ``max by (consumer)``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime

from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from framepipe.core.topology import STREAMS, ConsumerSpec

SAMPLE_INTERVAL_S = 5.0
API = "$JS.API"


@dataclass(frozen=True)
class Backlog:
    """One consumer's backlog as JetStream reported it."""

    pending: int
    ack_pending: int
    #: seconds since the oldest unacked message was stored (0: nothing waits).
    oldest_age_s: float

    @property
    def messages(self) -> int:
        return self.pending + self.ack_pending


def _work_queue(stream: str) -> bool:
    return any(spec.work_queue for spec in STREAMS if spec.name == stream)


def _age(stored: datetime | None, now: float) -> float:
    return max(0.0, now - stored.timestamp()) if stored is not None else 0.0


async def sample(
    nc: Client, js: JetStreamContext, consumer: ConsumerSpec, now: float | None = None
) -> Backlog:
    """The backlog of ``consumer`` now (see the module docstring for how the age is found)."""
    info = await js.consumer_info(consumer.stream, consumer.durable)
    pending, ack_pending = info.num_pending or 0, info.num_ack_pending or 0
    now = time.time() if now is None else now
    if pending + ack_pending == 0:
        return Backlog(pending, ack_pending, 0.0)
    if _work_queue(consumer.stream):
        reply = await nc.request(f"{API}.STREAM.INFO.{consumer.stream}", b"", timeout=5.0)
        state = json.loads(reply.data).get("state", {})
        first = state.get("first_ts") if state.get("messages") else None
        return Backlog(pending, ack_pending, _age(_parse(first), now))
    floor = info.ack_floor.stream_seq if info.ack_floor and info.ack_floor.stream_seq else 0
    try:
        oldest = await js.get_msg(consumer.stream, floor + 1, subject=consumer.filter_subject, next=True)
    except NotFoundError:
        return Backlog(pending, ack_pending, 0.0)
    return Backlog(pending, ack_pending, _age(oldest.time, now))


def _parse(stamp: object) -> datetime | None:
    """``first_ts`` as nats-py gives it: an RFC 3339 string with nanoseconds (or None)."""
    if not isinstance(stamp, str) or stamp.startswith("0001-"):
        return None
    head, _, frac = stamp.rstrip("Z").partition(".")
    micros = (frac + "000000")[:6]
    return datetime.fromisoformat(f"{head}.{micros}+00:00")
