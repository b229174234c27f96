"""framepipe.core.allocator: a stage's heap keeps each GOP's buffers for the next GOP."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from framepipe.core.allocator import operator_settings, tune_allocator

# A stage's pattern: a GOP's worth of 1.4 MB frames (one 720p yuv420 frame each) allocated,
# written and freed, GOP after GOP. Prints the minor page faults of the GOPs after the first.
_GOPS = """
import json, resource, sys
from framepipe.core.allocator import tune_allocator
tuning = tune_allocator()
def gop():
    frames = [bytearray(1_382_400) for _ in range(30)]
    for frame in frames:
        frame[::4096] = b"x" * len(frame[::4096])
gop()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    gop()
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({"tuned": tuning.tuned, "reason": tuning.reason, "faults_per_gop": faults / 5}))
"""


def _run_gops(env: dict[str, str]) -> dict[str, object]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    done = subprocess.run(
        [sys.executable, "-c", _GOPS], env=clean | env, capture_output=True, text=True, timeout=60, check=True
    )
    result: dict[str, object] = json.loads(done.stdout)
    return result


class TestOperatorSettings:
    def test_malloc_variables_are_the_operators(self) -> None:
        """MALLOC_*_ variables and glibc.malloc tunables count as the operator's choice."""
        environ = {
            "MALLOC_ARENA_MAX": "2",
            "MALLOC_TRIM_THRESHOLD_": "1",
            "GLIBC_TUNABLES": "glibc.malloc.tcache_count=0",
        }
        assert operator_settings(environ) == ["GLIBC_TUNABLES", "MALLOC_TRIM_THRESHOLD_"]

    def test_other_variables_are_not(self) -> None:
        """Unrelated variables and non-malloc tunables leave the choice to framepipe."""
        environ = {"PATH": "/bin", "GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX2", "MALLOC": "x"}
        assert operator_settings(environ) == []

    def test_the_operators_settings_are_kept(self) -> None:
        """With the operator's own setting, tune_allocator changes nothing and says why."""
        tuning = tune_allocator({"MALLOC_ARENA_MAX_": "2"})
        assert not tuning.tuned
        assert "MALLOC_ARENA_MAX_" in tuning.reason


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
class TestTuneAllocator:
    def test_freed_gop_buffers_are_reused(self) -> None:
        """After tuning, a GOP's frames reuse the last GOP's pages instead of faulting in new ones."""
        default = _run_gops({"GLIBC_TUNABLES": "glibc.malloc.perturb=0"})
        tuned = _run_gops({})
        assert default["tuned"] is False
        assert tuned["tuned"] is True, tuned["reason"]
        # glibc's defaults unmap each 1.4 MB frame on free: ~340 faults per frame, every GOP.
        assert float(str(default["faults_per_gop"])) > 30 * 300
        assert float(str(tuned["faults_per_gop"])) < float(str(default["faults_per_gop"])) / 20
