"""Cross-message batching: assembly, splitting back per message, max_batch and timeout."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from framepipe.stages.inference.batching import MicroBatcher, assemble, split


def _frames(tag: int, n: int) -> np.ndarray:
    return np.full((n, 2, 2, 3), tag, dtype=np.uint8)


def _detect(frames: np.ndarray) -> list[int]:
    """A stand-in model: one result per frame, the frame's tag, so routing is visible."""
    return [int(f[0, 0, 0]) for f in frames]


def test_assemble_and_split_round_trip() -> None:
    """Messages stack into one batch and the results split back by length; a count mismatch is an error."""
    parts = [_frames(1, 3), _frames(2, 1), _frames(3, 4)]
    batch, lengths = assemble(parts)
    assert batch.shape == (8, 2, 2, 3)
    assert lengths == [3, 1, 4]
    assert split(_detect(batch), lengths) == [[1, 1, 1], [2], [3, 3, 3, 3]]
    with pytest.raises(ValueError, match="results"):
        split([1, 2], [3])


def test_messages_share_model_calls_and_get_their_own_results() -> None:
    """Concurrent messages share model calls of at most max_batch frames and each gets its own results."""

    async def scenario() -> tuple[list[list[int]], list[int]]:
        batcher: MicroBatcher[int] = MicroBatcher(_detect, max_batch=8, batch_timeout_s=0.05)
        sizes = [3, 2, 3, 5, 1]  # 8 frames fill one batch at once; 6 wait for the timeout
        results = await asyncio.gather(
            *(batcher.submit(_frames(tag, n)) for tag, n in enumerate(sizes, start=1))
        )
        return list(results), batcher.calls

    results, calls = asyncio.run(scenario())
    assert results == [[1] * 3, [2] * 2, [3] * 3, [4] * 5, [5]]
    assert calls == [8, 6]
    assert max(calls) <= 8


def test_a_message_larger_than_max_batch_runs_alone() -> None:
    """A message over max_batch goes to the model whole, in one call of its own."""

    async def scenario() -> tuple[list[int], list[int]]:
        batcher: MicroBatcher[int] = MicroBatcher(_detect, max_batch=4, batch_timeout_s=0.01)
        result = await batcher.submit(_frames(7, 10))
        return result, batcher.calls

    result, calls = asyncio.run(scenario())
    assert result == [7] * 10
    assert calls == [10]  # the detector chunks it by max_batch itself


def test_a_failing_model_call_fails_only_its_batch() -> None:
    """A model call that raises fails the messages in its batch; the next batch runs normally."""
    calls = 0

    def flaky(frames: np.ndarray) -> list[int]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("boom")
        return _detect(frames)

    async def scenario() -> list[object]:
        batcher: MicroBatcher[int] = MicroBatcher(flaky, max_batch=2, batch_timeout_s=0.01)
        first = await asyncio.gather(batcher.submit(_frames(1, 2)), return_exceptions=True)
        second = await batcher.submit(_frames(2, 1))
        return [*first, second]

    first, second = asyncio.run(scenario())
    assert isinstance(first, RuntimeError)
    assert second == [2]
