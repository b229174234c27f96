"""Cross-message batching: frames of several FrameBatch messages in one model call.

Each message ``submit``s its frames and awaits its own slice of the results.
A flush happens when ``max_batch`` frames wait or ``batch_timeout_s`` after the
first waiting frame; one model call runs at a time (frames arriving meanwhile
form the next batch). Results go back to the submitter in order, so each GOP
is published, recorded in the ledger and acked by its own ``process`` call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

import numpy as np
import numpy.typing as npt

R = TypeVar("R")
Frames = npt.NDArray[np.uint8]


def assemble(parts: Sequence[Frames]) -> tuple[Frames, list[int]]:
    """Concatenate per-message frames; return the batch and each part's length."""
    lengths = [len(p) for p in parts]
    return np.concatenate(parts) if len(parts) > 1 else parts[0], lengths


def split(results: Sequence[R], lengths: Sequence[int]) -> list[list[R]]:
    """Cut the batch's per-frame results back into per-message lists."""
    if sum(lengths) != len(results):
        raise ValueError(f"{len(results)} results for {sum(lengths)} frames")
    out: list[list[R]] = []
    start = 0
    for n in lengths:
        out.append(list(results[start : start + n]))
        start += n
    return out


class MicroBatcher(Generic[R]):
    def __init__(self, detect: Callable[[Frames], list[R]], max_batch: int, batch_timeout_s: float) -> None:
        self.detect = detect
        self.max_batch = max_batch
        self.batch_timeout_s = batch_timeout_s
        self._pending: list[tuple[Frames, asyncio.Future[list[R]]]] = []
        self._lock = asyncio.Lock()
        self._timer: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Future[None]] = set()
        #: frames per model call (for metrics and tests).
        self.calls: list[int] = []

    def _pending_frames(self) -> int:
        return sum(len(f) for f, _ in self._pending)

    async def submit(self, frames: Frames) -> list[R]:
        if len(frames) == 0:
            return []
        future: asyncio.Future[list[R]] = asyncio.get_running_loop().create_future()
        self._pending.append((frames, future))
        if self._pending_frames() >= self.max_batch:
            task = asyncio.ensure_future(self._flush())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif self._timer is None or self._timer.done():
            self._timer = asyncio.ensure_future(self._flush_later())
        return await future

    async def _flush_later(self) -> None:
        await asyncio.sleep(self.batch_timeout_s)
        self._timer = None
        await self._flush()

    async def _flush(self) -> None:
        async with self._lock:
            while self._pending:
                # Take whole messages up to max_batch frames (at least one message).
                taken: list[tuple[Frames, asyncio.Future[list[R]]]] = []
                count = 0
                while self._pending and (not taken or count + len(self._pending[0][0]) <= self.max_batch):
                    item = self._pending.pop(0)
                    taken.append(item)
                    count += len(item[0])
                batch, lengths = assemble([f for f, _ in taken])
                self.calls.append(len(batch))
                try:
                    results = await asyncio.to_thread(self.detect, batch)
                    parts = split(results, lengths)
                except Exception as exc:  # noqa: BLE001 - each submitter fails (and retries) alone
                    for _, future in taken:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, future), part in zip(taken, parts, strict=True):
                    if not future.done():
                        future.set_result(part)
