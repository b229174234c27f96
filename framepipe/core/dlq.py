"""Dead-letter stream: a copy of the poison input plus why it failed.

The copy keeps the original headers and body byte for byte, so a dead letter
can be re-driven to its original subject once the cause is fixed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from framepipe.core import bus, health
from framepipe.core.errors import BusError
from framepipe.core.messages import Headers
from framepipe.core.topology import Names


async def dead_letter(js: JetStreamContext, stage: str, msg: Msg, reason: str, error: str) -> None:
    meta = msg.metadata
    headers = {k: v for k, v in (msg.headers or {}).items() if k != Headers.MSG_ID}
    headers.update(
        {
            Headers.STAGE: stage,
            Headers.ERROR_KIND: reason,
            Headers.ERROR: " ".join(error.split())[:1000],
            Headers.ORIGINAL_SUBJECT: msg.subject,
            Headers.ORIGINAL_STREAM_SEQ: str(meta.sequence.stream),
            Headers.DELIVERIES: str(meta.num_delivered),
        }
    )
    msg_id = f"dlq:{stage}:{meta.stream}:{meta.sequence.stream}"
    await bus.publish(js, Names.dlq_subject(stage), msg.data, headers, msg_id)


@dataclass(frozen=True)
class DeadLetter:
    """One message of the DLQ stream."""

    seq: int
    subject: str
    headers: dict[str, str]
    data: bytes

    @property
    def stage(self) -> str:
        return self.headers.get(Headers.STAGE, self.subject.rpartition(".")[2])

    def summary(self) -> dict[str, str | int]:
        h = self.headers
        return {
            "seq": self.seq,
            "stage": self.subject.rpartition(".")[2],
            "reason": h.get(Headers.ERROR_KIND, ""),
            "camera": h.get(Headers.CAMERA, ""),
            "gop": h.get(Headers.GOP, ""),
            "original_subject": h.get(Headers.ORIGINAL_SUBJECT, ""),
            "deliveries": h.get(Headers.DELIVERIES, ""),
            "bytes": len(self.data),
            "error": h.get(Headers.ERROR, ""),
        }


async def list_letters(js: JetStreamContext, stage: str | None = None) -> list[DeadLetter]:
    """Every dead letter still in the DLQ stream (optionally of one stage), oldest first."""
    info = await js.stream_info(Names.DLQ)
    out: list[DeadLetter] = []
    if not info.state.messages:
        return out
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        letter = await get_letter(js, seq)
        if letter is None:
            continue
        if stage is None or letter.subject == Names.dlq_subject(stage):
            out.append(letter)
    return out


async def get_letter(js: JetStreamContext, seq: int) -> DeadLetter | None:
    try:
        raw = await js.get_msg(Names.DLQ, seq)
    except NotFoundError:
        return None
    return DeadLetter(seq, raw.subject or "", dict(raw.headers or {}), raw.data or b"")


REPLAY_HEADERS = (
    Headers.ERROR,
    Headers.ERROR_KIND,
    Headers.ORIGINAL_SUBJECT,
    Headers.ORIGINAL_STREAM_SEQ,
    Headers.DELIVERIES,
)


async def replay(js: JetStreamContext, letter: DeadLetter, *, delete: bool = True) -> str:
    """Re-drive a dead letter to its original subject, byte for byte; return that subject.

    The original headers are restored (the DLQ's own headers dropped); the
    publish is de-duplicated by the dead letter's sequence, so replaying twice
    within the duplicate window publishes once. With ``delete`` the dead letter
    is removed after the publish ack.
    """
    subject = letter.headers.get(Headers.ORIGINAL_SUBJECT)
    if not subject:
        raise BusError(f"dead letter {letter.seq} has no {Headers.ORIGINAL_SUBJECT} header")
    headers = {k: v for k, v in letter.headers.items() if k not in REPLAY_HEADERS}
    stage = letter.subject.rpartition(".")[2]
    # The stage header of the original message (if any) was overwritten by the
    # dead-letter stage name; downstream stages do not route on it.
    await bus.publish(js, subject, letter.data, headers, f"replay:{stage}:{letter.seq}", attempts=8)
    if delete:
        with contextlib.suppress(NotFoundError):
            await js.delete_msg(Names.DLQ, letter.seq)
    return subject


async def purge(js: JetStreamContext, stage: str | None = None) -> int:
    """Delete the dead letters (of one stage, or all); return how many there were."""
    before = (await js.stream_info(Names.DLQ)).state.messages
    if stage is None:
        await js.purge_stream(Names.DLQ)
    else:
        await js.purge_stream(Names.DLQ, subject=Names.dlq_subject(stage))
    after = (await js.stream_info(Names.DLQ)).state.messages
    return int(before - after)


@dataclass(frozen=True)
class DlqStats:
    """How full the dead-letter stream is: per stage subject, and the stream's total bytes."""

    messages: dict[str, int]
    #: age of each stage's oldest dead letter, seconds (absent when it has none).
    oldest_age_s: dict[str, float]
    bytes: int
    max_bytes: int
    max_msgs: int


async def dlq_stats(js: JetStreamContext) -> DlqStats:
    """Count dead letters per ``dlq.<stage>`` and find each stage's oldest one."""
    info = await js.stream_info(Names.DLQ, subjects_filter=Names.wildcard(Names.DLQ))
    per_subject = dict(info.state.subjects or {})
    messages: dict[str, int] = {}
    oldest: dict[str, float] = {}
    now = time.time()
    for subject, count in per_subject.items():
        stage = subject.rpartition(".")[2]
        messages[stage] = int(count)
        with contextlib.suppress(NotFoundError):
            first = await js.get_msg(Names.DLQ, seq=info.state.first_seq, subject=subject, next=True)
            if first.time is not None:
                oldest[stage] = max(0.0, now - first.time.timestamp())
    return DlqStats(
        messages,
        oldest,
        int(info.state.bytes),
        int(info.config.max_bytes or -1),
        int(info.config.max_msgs or -1),
    )


def export_dlq_stats(stats: DlqStats, stages: tuple[str, ...]) -> None:
    """Set the ``framepipe_dlq_*`` gauges (a stage without dead letters reads 0)."""
    for stage in set(stages) | set(stats.messages):
        health.DLQ_MESSAGES.labels(stage).set(stats.messages.get(stage, 0))
        health.DLQ_OLDEST_AGE.labels(stage).set(stats.oldest_age_s.get(stage, 0.0))
    health.DLQ_BYTES.set(stats.bytes)
    health.DLQ_LIMIT_BYTES.set(stats.max_bytes)


async def export_dlq_metrics(js: JetStreamContext, stages: tuple[str, ...], interval_s: float = 15.0) -> None:
    """Refresh the DLQ gauges every ``interval_s`` until cancelled (run by the sink process)."""
    while True:
        try:
            export_dlq_stats(await dlq_stats(js), stages)
        except Exception as exc:  # noqa: BLE001 - metrics must never stop the sink
            health.ERRORS.labels("dlq-metrics", type(exc).__name__).inc()
        await asyncio.sleep(interval_s)
