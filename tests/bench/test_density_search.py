"""bench.density's camera-count search and its limit arithmetic (no pipeline is run here)."""

from __future__ import annotations

from typing import Any

import pytest

from bench.density import bare_per_camera, limit, search


class TestDensitySearch:
    @pytest.mark.parametrize("capacity", [0, 1, 3, 7, 12, 30])
    def test_search_finds_the_largest_sustained_count(self, capacity: int) -> None:
        """Doubling then bisection ends on the largest sustained count (capped), in few trials."""
        tried: list[int] = []

        def trial(n: int) -> dict[str, Any]:
            tried.append(n)
            return {"cameras": n, "sustained": n <= capacity}

        trials = search(trial, start=4, cap=24)
        best = max((t["cameras"] for t in trials if t["sustained"]), default=0)
        assert best == min(capacity, 24)
        assert len(tried) == len(set(tried)) <= 7

    def test_limit_counts_remux_or_burn_in(self) -> None:
        """Overlay pays a remux per camera-second, burn-in a re-decode + encode."""
        costs = {"decode": 0.04, "letterbox": 0.01, "model": 0.05, "remux": 0.0, "burn_in": 0.3}
        assert limit(costs, "overlay", 2) == pytest.approx(20.0)
        assert limit(costs, "burn-in", 2) == pytest.approx(5.0)

    def test_bare_work_per_camera_is_the_modes_own(self) -> None:
        """density_cpu's overhead ratio divides by the mode's bare work: burn-in's includes its encode."""
        costs = {"decode": 0.04, "letterbox": 0.01, "model": 0.05, "remux": 0.02, "burn_in": 0.3}
        assert bare_per_camera(costs, "overlay") == pytest.approx(0.12)
        assert bare_per_camera(costs, "burn-in") == pytest.approx(0.4)
