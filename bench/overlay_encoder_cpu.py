"""Overlay mode's encoder CPU, before and after the remux moved into the analysis stage.

One real-time camera in ``[output] mode = "overlay"`` on a running pipeline (every stage a
process on a real nats-server, one replica each, autoscaling off so the encoder stays up and
its idle cost is counted too). The CPU time (user + system, from ``/proc/<pid>/stat``) of
each stage process is read when the camera starts and when its last GOP is recorded; the
difference is what the stage spent on that camera's video.

The same run measures two source trees, rounds alternated (the machine is shared):

- ``before``: ``--before-tree`` (e.g. ``git archive`` of the commit before the change into a
  folder), where overlay GOPs still go to the encoder for their remux;
- ``after``: this tree, where the analysis stage remuxes them and the encoder gets nothing;
- a burn-in round on this tree, as a reference that the measurement sees encoder work.

    python -m bench.overlay_encoder_cpu --before-tree /tmp/base [--rounds 2] [--seconds 10]

Writes ``bench/results/overlay_encoder_cpu.json``. Not part of CI.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import REPO, RESULTS, bench_settings, clip, ratio, write_result
from framepipe.core.topology import Names, process_kind
from framepipe.local.natsserver import NatsServer
from framepipe.local.supervisor import LocalSystem
from framepipe.media.sample import ClipSpec

CAMERA = "ovl"
TICK = os.sysconf("SC_CLK_TCK")


def _cpu_s(pid: int | None) -> float:
    """User + system CPU seconds of ``pid`` so far (0 once it is gone)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def _stage_cpu(system: LocalSystem) -> dict[str, float]:
    totals: dict[str, float] = {}
    for managed in system.processes:
        kind = process_kind(managed.name)
        pid = managed.process.pid if managed.process else None
        totals[kind] = totals.get(kind, 0.0) + _cpu_s(pid)
    return totals


def one_round(seconds: float, mode: str = "overlay") -> dict[str, Any]:
    """One measured camera on this process's ``framepipe`` (its PYTHONPATH says which tree)."""
    source = clip(ClipSpec(width=640, height=360, fps=15, seconds=seconds, gop=15))
    with tempfile.TemporaryDirectory(prefix="fp-ovlcpu-") as tmp:
        workdir = Path(tmp)
        server = NatsServer(store_dir=workdir / "jetstream").start(log_file=workdir / "nats.log")
        settings = bench_settings(
            nats={"url": server.url},
            output={"mode": mode},
            sink={"output_dir": str(workdir / "out")},
            local={"state_dir": str(workdir / "state")},
        )
        system = LocalSystem(settings, workdir / "state", embedded_nats=False, monitor_url=server.monitor_url)
        try:
            system.start({Names.ENCODER: 1})
            system.wait_ready()
            start = _stage_cpu(system)
            wall = time.monotonic()
            gateway = system.add_camera(CAMERA, str(source), "realtime")
            complete = system.wait_for_camera(CAMERA, gateway, stall_timeout=90).complete
            end = _stage_cpu(system)
            wall = time.monotonic() - wall
        finally:
            system.stop()
            server.stop()
    cpu = {kind: round(end.get(kind, 0.0) - start.get(kind, 0.0), 3) for kind in end if kind in start}
    return {"complete": complete, "wall_s": round(wall, 1), "cpu_s": cpu}


def _round_in(tree: Path, seconds: float, mode: str = "overlay") -> dict[str, Any]:
    # The tree's own framepipe and bench.common, this file's one_round (the tree may predate it).
    env = {**os.environ, "PYTHONPATH": str(tree)}
    code = (
        "import importlib.util, json, sys; "
        f"spec = importlib.util.spec_from_file_location('overlay_cpu', {str(Path(__file__).resolve())!r}); "
        "b = importlib.util.module_from_spec(spec); spec.loader.exec_module(b); "
        f"print(json.dumps(b.one_round({seconds}, {mode!r})))"
    )
    argv = [sys.executable, "-c", code]
    done = subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True, timeout=600, check=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def run(before_tree: Path, rounds: int, seconds: float) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {"before": [], "after": [], "burn_in_reference": []}
    for _ in range(rounds):
        runs["before"].append(_round_in(before_tree, seconds))
        runs["after"].append(_round_in(REPO, seconds))
    # The same measurement of a mode with encoder work: shows it sees the encoder's CPU at all.
    runs["burn_in_reference"].append(_round_in(REPO, seconds, "burn-in"))

    def median(case: str, stage: str) -> float:
        return round(statistics.median(r["cpu_s"].get(stage, 0.0) for r in runs[case]), 3)

    summary: dict[str, Any] = {}
    for stage in (Names.ENCODER, Names.ANALYSIS):
        before, after = median("before", stage), median("after", stage)
        summary[f"{stage}_cpu_s_before"] = before
        summary[f"{stage}_cpu_s_after"] = after
        summary[f"{stage}_after_over_before"] = ratio(after, before)
    summary["encoder_cpu_s_burn_in_reference"] = median("burn_in_reference", Names.ENCODER)
    summary["every_round_complete"] = all(r["complete"] for case in runs.values() for r in case)
    return {"seconds": seconds, "rounds": rounds, "runs": runs, "summary": summary}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--before-tree", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    result = run(args.before_tree.resolve(), args.rounds, args.seconds)
    return write_result(
        result,
        RESULTS / "overlay_encoder_cpu.json",
        " ".join(["python -m bench.overlay_encoder_cpu", *sys.argv[1:]]),
    )


if __name__ == "__main__":
    main()
