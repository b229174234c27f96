"""The GOP ledger: which parts of a GOP have detections (JetStream KV).

Each inference replica records its part with a compare-and-set on the GOP's
entry (a GOP sent in one part needs none). Recording a part twice (redelivery) changes nothing, and whichever
replica completes the set gets every part's detections back and publishes the
ENCODE item — with a de-duplicating msg id, so a crash between "set" and
"publish" is healed by the redelivered part.
"""

from __future__ import annotations

from typing import Any

import msgpack
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from framepipe.core.errors import RetryableError, SchemaError
from framepipe.core.messages import FrameDetections
from framepipe.core.topology import Names

CAS_ATTEMPTS = 50


class GopLedger:
    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv

    async def record(
        self, camera: str, gop: int, part: int, parts: int, frames: tuple[FrameDetections, ...]
    ) -> tuple[FrameDetections, ...] | None:
        """Record ``part``; return all frames (in order) once every part is in."""
        if parts == 1:
            # The only part is the whole GOP: nothing to gather, so no entry (two requests and
            # a stored message per GOP saved). A redelivery publishes the same de-duplicated item.
            return tuple(sorted(frames, key=lambda f: f.frame))
        key = Names.ledger_key(camera, gop)
        wire = [f.to_wire() for f in frames]
        for _ in range(CAS_ATTEMPTS):
            try:
                entry = await self.kv.get(key)
                revision: int | None = entry.revision
                state = msgpack.unpackb(entry.value or b"", raw=False, strict_map_key=False)
            except KeyNotFoundError:
                revision, state = None, {"parts": parts, "done": {}}
            if state.get("parts") != parts:
                raise SchemaError(f"ledger {key}: part count {parts} disagrees with {state.get('parts')}")
            done: dict[int, list[dict[str, Any]]] = state["done"]
            if part not in done:
                done[part] = wire
                value = msgpack.packb(state, use_bin_type=True)
                try:
                    if revision is None:
                        await self.kv.create(key, value)
                    else:
                        await self.kv.update(key, value, last=revision)
                except KeyWrongLastSequenceError:
                    continue
                except Exception as exc:  # create() on an existing key raises a generic API error
                    if revision is None and "wrong last sequence" in str(exc).lower():
                        continue
                    raise
            if len(done) < parts:
                return None
            merged = [FrameDetections.from_wire(f) for p in sorted(done) for f in done[p]]
            return tuple(sorted(merged, key=lambda f: f.frame))
        raise RetryableError(f"ledger {key}: too much contention, retry later")
