"""The GOP a later stage's item points at, read back from VIDEO by its sequence.

The analysis stage reads it for the frames' timestamps, the crops and the overlay remux; the
encoder for the burn-in. Both refuse the same two ways, as poison: the GOP has aged out of
VIDEO (what to raise is in the message), or the sequence now holds another camera's GOP.
"""

from __future__ import annotations

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from framepipe.core import bus, messages
from framepipe.core.errors import MissingInputError
from framepipe.core.messages import EncodeItem, GopMessage
from framepipe.core.topology import Names


async def read_gop(js: JetStreamContext, item: EncodeItem) -> GopMessage:
    """The item's GOP; :class:`MissingInputError` when VIDEO no longer holds it."""
    try:
        raw = await bus.stored_msg(js, Names.VIDEO, item.video_seq)
    except NotFoundError:
        raise MissingInputError(
            f"GOP {item.gop} of {item.camera} (VIDEO seq {item.video_seq}) is no longer "
            "in the VIDEO stream; raise streams.video_max_age_s"
        ) from None
    gop = messages.decode(raw.headers, raw.data or b"", GopMessage)
    if (gop.camera, gop.gop) != (item.camera, item.gop):
        raise MissingInputError(
            f"VIDEO seq {item.video_seq} holds {gop.camera}/{gop.gop}, expected {item.camera}/{item.gop}"
        )
    return gop
