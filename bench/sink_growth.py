"""The sink's cost per GOP as a camera's recording grows: a minute, an hour and a day of it.

A camera keeps its recording (``[sink] retain_hours = 0`` keeps all) and the sink appends
one entry per GOP: 86,400 in a day of 1 s GOPs. This times what the sink does for one GOP
(``CameraOutput.add_segment`` + ``advance``: the segment, its sidecar and state, the
detections, the playlist and the progress) in CPU seconds, on a recording that already
holds N entries, and reports each N against the minute-long recording of the same run.
Its figure of merit is that ratio: a sink whose per-GOP work grows with the recording
falls behind after hours on a node that sustained its cameras for a minute.

    python -m bench.sink_growth [--gops 40] [--sizes 60,3600,86400]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import RESULTS, write_result
from framepipe.core.messages import Detection, FrameDetections, SegmentMessage
from framepipe.stages.camera_output import CameraOutput, segment_name

FRAMES = 30  # per GOP: 1 s at 30 fps
SEGMENT_BYTES = 150_000  # about a 720p GOP's worth of packets


def segment(camera: str, gop: int) -> SegmentMessage:
    face = Detection((0.4, 0.3, 0.6, 0.6), 0.9)
    frames = tuple(FrameDetections(gop * FRAMES + i, gop * FRAMES + i, (face,)) for i in range(FRAMES))
    return SegmentMessage(
        camera=camera, gop=gop, container="mpegts", duration_s=1.0, frames=frames,
        data=bytes(SEGMENT_BYTES), mode="overlay", time_base=(1, 90000),
    )  # fmt: skip


def per_gop_cpu(root: Path, entries: int, gops: int) -> float:
    """CPU seconds per GOP, appending ``gops`` GOPs to a recording of ``entries`` entries."""
    output = CameraOutput(root, "cam", 0, 0)
    output.progress.entries = [
        {"gop": g, "uri": segment_name(g), "duration": 1.0, "discontinuity": False, "at": 1.7e9 + g}
        for g in range(entries)
    ]
    output.progress.next_gop = entries
    output._save()  # the recording as it stands (its one-off cost is not the per-GOP one)
    started = time.process_time()
    for gop in range(entries, entries + gops):
        output.add_segment(segment("cam", gop))
        output.advance()
    return (time.process_time() - started) / gops


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--gops", type=int, default=40, help="GOPs appended per recording size")
    parser.add_argument("--sizes", default="60,3600,86400", help="entries already recorded")
    parser.add_argument("--out", type=Path, default=RESULTS / "sink_growth.json")
    args = parser.parse_args(argv)
    sizes = [int(n) for n in args.sizes.split(",")]
    rows = []
    for entries in sizes:
        with tempfile.TemporaryDirectory(prefix="fp-sink-growth-") as tmp:
            cost = min(per_gop_cpu(Path(tmp) / str(i), entries, args.gops) for i in range(2))
        rows.append({"entries": entries, "cpu_ms_per_gop": round(cost * 1000, 3)})
        print(f"  {entries:>6} entries: {cost * 1000:7.2f} CPU ms per GOP", file=sys.stderr)
    base = rows[0]["cpu_ms_per_gop"]
    for row in rows:
        row["ratio_to_first"] = round(row["cpu_ms_per_gop"] / base, 2) if base else None
    summary = {f"{r['entries']} entries": f"{r['cpu_ms_per_gop']} ms ({r['ratio_to_first']}x)" for r in rows}
    result = {"benchmark": "sink_growth", "params": {"gops": args.gops, "sizes": sizes}, "rows": rows}
    result["summary"] = summary
    return write_result(result, args.out, "python -m bench.sink_growth " + " ".join(argv or sys.argv[1:]))


if __name__ == "__main__":
    main()
