"""Run every benchmark (``make bench``; ``make bench-quick`` for ``--quick``) and tabulate them.

Each benchmark runs as its own process (``python -m bench.<name>``), one after
the other so they do not compete for the cores, and writes its own
``bench/results/<name>.json``. This script then writes ``summary.json``
(the summaries, machine and wall time of each) and prints a Markdown table of
the headline figures, the one in ``bench/README.md``.

    python -m bench.run_all [--quick] [--only codec,bus] [--table]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import RESULTS, machine

BENCHMARKS = (
    "codec",
    "inference",
    "e2e",
    "bus",
    "scaling",
    "latency",
    "selection",
    "encoder_presets",
    "density",
)


def _row(bench: str, what: str, value: str, baseline: str, ratio: Any) -> str:
    return f"| {bench} | {what} | {value} | {baseline} | {ratio} |"


def table(results: Path) -> str:
    """Headline figure, its same-run baseline and the ratio, for every result file present."""
    rows = ["| benchmark | figure | value | baseline (same run) | ratio |", "|---|---|---|---|---|"]

    def load(name: str) -> dict[str, Any] | None:
        path = results / f"{name}.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def _paired(ratio: Any, best: Any) -> str:
        """Median of paired ratios, with best-vs-best beside it (older results: one figure)."""
        return f"{ratio} (best/best {best})" if best is not None else str(ratio)

    if (r := load("codec")) is not None:
        for case, s in r["summary"].items():
            rows.append(
                _row(
                    "codec",
                    f"decoder {case}, fps",
                    f"{s['decoder_stage_fps']}",
                    f"PyAV decode + letterbox {s['decoder_bare_fps']}",
                    _paired(s["decoder_ratio"], s.get("decoder_ratio_best_vs_best")),
                )
            )
            rows.append(
                _row(
                    "codec",
                    f"encoder {case}, fps",
                    f"{s['encoder_stage_fps']}",
                    f"PyAV decode + draw + libx264 {s['encoder_bare_fps']}",
                    _paired(s["encoder_ratio"], s.get("encoder_ratio_best_vs_best")),
                )
            )
    if (r := load("inference")) is not None:
        s = r["summary"]
        rows.append(
            _row(
                "inference",
                "stage fps",
                f"{s['stage_fps']}",
                f"bare ONNX Runtime {s['bare_fps']}",
                _paired(s["ratio_stage_over_bare"], s.get("ratio_best_vs_best")),
            )
        )
    if (r := load("e2e")) is not None:
        s = r["summary"]
        rows.append(
            _row(
                "e2e",
                f"pipeline fps, {r['params']['cameras']} cameras",
                f"{s['pipeline_fps']}",
                f"monolith {s['monolith_fps']}",
                s["ratio_pipeline_over_monolith"],
            )
        )
        if "realtime_cameras_sustained" in s:
            rows.append(
                _row(
                    "e2e",
                    "real-time 30 fps cameras sustained",
                    f"{s['realtime_cameras_sustained']} (of {s['realtime_cameras_tried']} tried)",
                    f"monolith fps / 30 = {s['realtime_cameras_by_monolith_fps']}",
                    "–",
                )
            )
    if (r := load("bus")) is not None:
        for key, s in r["summary"]["latency_ms"].items():
            if key.startswith("file "):
                rows.append(
                    _row(
                        "bus",
                        f"{key} publish→fetch p50/p99 ms",
                        f"{s['fetch1_p50']} / {s['fetch1_p99']}",
                        f"core NATS p50 {s['core_p50']}",
                        round(s["fetch1_p50"] / s["core_p50"], 2) if s["core_p50"] else "–",
                    )
                )
        for key, s in r["summary"]["throughput"].items():
            rows.append(
                _row(
                    "bus",
                    f"{key} publish msgs/s (MB/s)",
                    f"{s['publish_msgs_per_s']} ({s['publish_mb_per_s']})",
                    "core NATS publish+flush",
                    s["ratio_publish_over_core"],
                )
            )
    if (r := load("scaling")) is not None:
        s = r["summary"]
        for stage, per in s["per_replica"].items():
            eff = ", ".join(f"{n}: {e}" for n, e in s["efficiency"][stage].items())
            rows.append(
                _row(
                    "scaling",
                    f"{stage} GOPs/s per replica (efficiency {eff})",
                    f"{per['gops_per_s']} ({per['frames_per_s']} fps)",
                    "1 replica",
                    "–",
                )
            )
    if (r := load("density")) is not None:
        for case, s in r["summary"].items():
            rows.append(
                _row(
                    "density",
                    f"{case} real-time cameras (detect_fps 5)",
                    f"{s['cameras_sustained']}",
                    f"bare-cost limit {s['limit_cameras']}, monolith {s['monolith_cameras']}",
                    s["ratio_to_limit"],
                )
            )
    if (r := load("latency")) is not None:
        s = r["summary"]
        rows.append(
            _row(
                "latency",
                "glass-to-output p50 / p99 s",
                f"{s['latency_p50_s']} / {s['latency_p99_s']}",
                f"monolith per GOP p50 {s['monolith_per_gop_p50_s']}",
                s["ratio_p50_over_monolith_gop"],
            )
        )
    return "\n".join(rows)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="every benchmark in its quick mode")
    parser.add_argument("--only", default=",".join(BENCHMARKS), help="comma-separated subset")
    parser.add_argument("--table", action="store_true", help="only print the table of the existing results")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.table:
        print(table(args.results))
        return 0
    runs: dict[str, Any] = {}
    failed = []
    for name in [n for n in args.only.split(",") if n]:
        if name not in BENCHMARKS:
            parser.error(f"unknown benchmark {name!r}; choose from {', '.join(BENCHMARKS)}")
        command = [sys.executable, "-m", f"bench.{name}", "--out", str(args.results / f"{name}.json")]
        command += ["--quick"] if args.quick else []
        print(f"== {' '.join(command[1:])}", flush=True)
        started = time.perf_counter()
        code = subprocess.call(command)
        elapsed = round(time.perf_counter() - started, 1)
        out = args.results / f"{name}.json"
        summary = json.loads(out.read_text())["summary"] if code == 0 and out.is_file() else None
        runs[name] = {"exit": code, "wall_s": elapsed, "summary": summary}
        if code != 0:
            failed.append(name)
    path = args.results / "summary.json"
    earlier = json.loads(path.read_text()) if path.is_file() else {}
    if earlier.get("quick") == args.quick:
        # --only reruns some: keep the others' entries (each keeps its own machine info in its JSON).
        runs = {**earlier.get("runs", {}), **runs}
    report = {"quick": args.quick, "machine": machine(), "runs": runs}
    path.write_text(json.dumps(report, indent=2))
    print(table(args.results))
    print(f"total {sum(r['wall_s'] for r in runs.values()):.0f} s; wrote {args.results / 'summary.json'}")
    if failed:
        print(f"failed: {', '.join(failed)}; see the output above, rerun one with python -m bench.<name>")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
