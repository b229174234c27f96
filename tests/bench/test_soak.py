"""bench/soak.py's steady-state verdict, on the figures of the 10-minute soak in docs/reliability.md."""

from __future__ import annotations

from typing import Any

from bench.soak import steady_state, summarize


def _row(rss: int, fds: int, backlog: int | None) -> dict[str, Any]:
    process = {"rss_kib": rss, "fds": fds, "threads": 9}
    return {"procs": {"decoder-0": process}, "backlog": {"inference": backlog}}


class TestSteadyState:
    """What `make soak` calls steady: bounded RSS, fds, threads and backlog growth after warm-up."""

    def test_flat_run_is_steady_and_a_missing_backlog_sample_is_skipped(self) -> None:
        """RSS ×1.08, fds flat, backlog flat with a sample that had no figure: steady."""
        rows = [_row(121_000, 8, 1)] * 10 + [_row(130_700, 8, None)] + [_row(130_700, 8, 3)] * 10
        growth = summarize(rows, 0.2)
        assert growth["backlog-inference"] == {"after_warmup": 1, "end": 3}
        assert steady_state(growth) == []

    def test_growing_backlog_rss_and_fds_are_each_named(self) -> None:
        """The inference backlog 160 → 476 of the loaded soak, RSS ×1.22, fds +5: not steady."""
        rows = [_row(131_000, 23, 160)] * 10 + [_row(160_000, 28, 476)] * 10
        grew = steady_state(summarize(rows, 0.2))
        assert grew == ["decoder-0 RSS x1.221", "decoder-0 fds 23 -> 28", "backlog-inference 160 -> 476"]
