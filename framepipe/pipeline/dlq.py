"""Dead-letter stream: a copy of the poison input plus why it failed.

The copy keeps the original headers and body byte for byte, so a dead letter
can be re-driven to its original subject once the cause is fixed.
"""

from __future__ import annotations

from nats.aio.msg import Msg
from nats.js import JetStreamContext

from framepipe.pipeline import bus
from framepipe.pipeline.config import Headers, Names


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
