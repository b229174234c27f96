"""Recording retention: the sink prunes a camera's oldest segments by age or size, keeps the
playlist valid (media and discontinuity sequence), deletes their files, says so in one line,
and FFmpeg's HLS demuxer (what ffprobe and hls.js-like players read) still plays the rest.

Driven on real H.264 MPEG-TS segments made with PyAV, through the sink's own CameraOutput and
OutputWriter; ``TestRetentionInARun`` runs a real ``framepipe run --once``."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from structlog.testing import capture_logs

from framepipe.core.messages import FrameDetections, SegmentMessage
from framepipe.core.settings import Settings
from framepipe.local.natsserver import free_port
from framepipe.stages import retention
from framepipe.stages.camera_output import CameraOutput, CameraProgress
from framepipe.stages.retention import RetentionPolicy
from framepipe.stages.sink import OutputWriter
from tests.helpers import MODELS, faces_clip

FRAMES = 10  # per segment, at 25 fps


def ts_segment(start: int, width: int = 160, height: int = 96) -> bytes:
    """A real H.264 MPEG-TS segment of ``FRAMES`` frames from frame ``start`` (PyAV, libx264,
    no B-frames: consecutive segments make one timeline, as the encoder's do)."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mpegts") as container:
        stream = container.add_stream("libx264", rate=25, options={"bf": "0"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 25)
        for index in range(FRAMES):
            image = np.full((height, width, 3), ((start + index) * 20) % 255, dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = start + index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return buffer.getvalue()


def add_segments(output: CameraOutput, count: int, discontinuity_at: int = 2) -> None:
    """``count`` real segments of one timeline (GOP ``discontinuity_at`` after a discontinuity),
    each with its sidecar, and a face snapshot for GOP 1, as the sink writes them; the source
    then ended (the playlist has its ENDLIST, so a player reads it as a whole)."""
    for gop in range(count):
        data = ts_segment(gop * FRAMES)
        frames = tuple(FrameDetections(gop * FRAMES + i, gop * FRAMES + i) for i in range(FRAMES))
        segment = SegmentMessage(
            camera=output.camera, gop=gop, container="mpegts", duration_s=FRAMES / 25, frames=frames,
            data=data, discontinuity=gop == discontinuity_at, mode="overlay", time_base=(1, 25),
        )  # fmt: skip
        output.add_segment(segment)
        if gop == 1:
            (output.dir / "snapshots").mkdir(exist_ok=True)
            (output.dir / "snapshots" / "000001_0.jpg").write_bytes(b"\xff\xd8 a face crop")
    assert output.advance() == count
    assert output.finish_if_complete("ended", count)


def playlist(output: CameraOutput) -> list[str]:
    return (output.dir / "index.m3u8").read_text().splitlines()


def tag(lines: list[str], name: str) -> int | None:
    found = [int(line.split(":", 1)[1]) for line in lines if line.startswith(f"#{name}:")]
    return found[0] if found else None


def decoded_pts(playlist_file: Path) -> list[int]:
    """Every frame's pts as FFmpeg's HLS demuxer plays the playlist (libavformat, as ffprobe)."""
    with av.open(str(playlist_file), format="hls") as container:
        return [frame.pts for frame in container.decode(video=0) if frame.pts is not None]


class TestPruneBySize:
    def test_oldest_segments_and_their_files_go_and_the_playlist_stays_valid(self, tmp_path: Path) -> None:
        """8 segments, room for 3: GOPs 0-4 and their files go; sequence numbers advance; the
        rest plays; one log line names what went."""
        settings = Settings().replace(sink={"output_dir": str(tmp_path), "retain_max_gb": 1.0})
        writer = OutputWriter(settings)
        output = asyncio.run(writer.camera("door"))
        add_segments(output, 8)
        before = playlist(output)
        assert tag(before, "EXT-X-MEDIA-SEQUENCE") == 0
        assert "#EXT-X-PLAYLIST-TYPE:EVENT" not in before  # a playlist that will lose segments
        sizes = [entry["bytes"] for entry in output.progress.entries]
        assert all(size > 1000 for size in sizes)
        # Room for the newest three (the policy is the only thing set in bytes here).
        output.policy = writer.retention = RetentionPolicy(max_bytes=sum(sizes[-3:]))
        with capture_logs() as logs:
            asyncio.run(writer.apply_retention(output))
        (line,) = [entry for entry in logs if entry["event"] == "recording.pruned"]
        assert line["camera"] == "door"
        assert line["segments"] == 5
        assert line["gops"] == "0..4"
        assert line["reasons"] == ["size"]
        assert line["bytes"] == sum(sizes[:5])
        assert line["kept_segments"] == 3

        after = playlist(output)
        assert [x for x in after if x.startswith("seg_")] == [f"seg_{g:06d}.ts" for g in (5, 6, 7)]
        assert tag(after, "EXT-X-MEDIA-SEQUENCE") == 5  # advanced by the 5 removed segments
        assert tag(after, "EXT-X-DISCONTINUITY-SEQUENCE") == 1  # GOP 2's discontinuity went
        assert "#EXT-X-DISCONTINUITY" not in after
        for gop in range(5):
            assert not (output.dir / f"seg_{gop:06d}.ts").exists()
            assert not (output.dir / f"seg_{gop:06d}.json").exists()  # the overlay sidecar
            assert not (output.state_dir / f"{gop:06d}.json").exists()
        assert not (output.dir / "snapshots" / "000001_0.jpg").exists()
        for gop in (5, 6, 7):
            assert (output.dir / f"seg_{gop:06d}.ts").is_file()
            assert (output.dir / f"seg_{gop:06d}.json").is_file()
        # What remains plays: every frame of GOPs 5-7, in order (MPEG-TS pts in 90 kHz).
        pts = decoded_pts(output.dir / "index.m3u8")
        assert len(pts) == 3 * FRAMES
        assert pts == sorted(pts)
        # The state survives a restart of the sink: the same playlist from the progress file.
        again = CameraOutput(tmp_path, "door", 0, 0, policy=output.policy)
        again._save()
        assert playlist(again) == after

    def test_a_later_pass_keeps_the_numbering_going(self, tmp_path: Path) -> None:
        """A second pass after more segments advances the media sequence from where it was."""
        output = CameraOutput(tmp_path, "door", 0, 0, policy=RetentionPolicy(max_bytes=1))
        add_segments(output, 4, discontinuity_at=3)
        pruned = output.prune()
        assert pruned is not None
        assert pruned.gops == (0, 1, 2)  # the newest segment always stays
        lines = playlist(output)
        assert tag(lines, "EXT-X-MEDIA-SEQUENCE") == 3
        assert tag(lines, "EXT-X-DISCONTINUITY-SEQUENCE") is None  # GOP 3's tag is still listed
        assert "#EXT-X-DISCONTINUITY" in lines
        assert output.prune() is None  # nothing more to remove: no second line
        assert decoded_pts(output.dir / "index.m3u8") == sorted(decoded_pts(output.dir / "index.m3u8"))


class TestPruneByAge:
    def test_segments_older_than_retain_hours_go(self, tmp_path: Path) -> None:
        """retain_hours=1: two hours later every segment but the newest is past it."""
        output = CameraOutput(tmp_path, "door", 0, 0, policy=RetentionPolicy(max_age_s=3600.0))
        add_segments(output, 5)
        assert output.prune(now=time.time() + 60) is None  # all younger than an hour
        pruned = output.prune(now=time.time() + 7200)
        assert pruned is not None
        assert pruned.reasons == ("age",)
        assert pruned.gops == (0, 1, 2, 3)
        assert sorted(p.name for p in tmp_path.glob("door/seg_*.ts")) == ["seg_000004.ts"]
        assert len(decoded_pts(output.dir / "index.m3u8")) == FRAMES

    def test_recordings_from_before_retention_use_the_segment_files_time(self, tmp_path: Path) -> None:
        """Entries without the appended time (an older progress file): the segment's mtime."""
        output = CameraOutput(tmp_path, "door", 0, 0, policy=RetentionPolicy(max_age_s=3600.0))
        add_segments(output, 3)
        for entry in output.progress.entries:
            del entry["at"], entry["bytes"]
        old = time.time() - 2 * 3600
        os.utime(output.dir / "seg_000000.ts", (old, old))
        pruned = output.prune()
        assert pruned is not None
        assert pruned.gops == (0,)


class TestPruneAfterACrash:
    def test_files_a_killed_pass_left_are_deleted_on_the_next_load(self, tmp_path: Path) -> None:
        """A sink killed after saving the pruned playlist but before deleting: the files go at the
        next pass after the restart, and the playlist never named a missing file."""
        policy = RetentionPolicy(max_bytes=1)
        output = CameraOutput(tmp_path, "door", 0, 0, policy=policy)
        add_segments(output, 4)
        from framepipe.stages import retention

        assert retention.prune_head(output.dir, output.progress, policy, time.time()) is not None
        output._save()  # ...and killed here, before delete_files
        assert (output.dir / "seg_000000.ts").exists()
        restarted = CameraOutput(tmp_path, "door", 0, 0, policy=policy)
        assert restarted.prune() is None  # nothing new to prune, but the leftovers go
        assert sorted(p.name for p in tmp_path.glob("door/seg_*.ts")) == ["seg_000003.ts"]
        assert json.loads((output.state_dir / "progress.json").read_text())["pruned_segments"] == 3


class TestRecordingState:
    """The sink's state across a restart (the entries journal, core.recording)."""

    def test_a_reloaded_recording_has_the_same_entries_and_playlist(self, tmp_path: Path) -> None:
        """A new CameraOutput on the folder reads the journal back; progress.json lists no entries."""
        output = CameraOutput(tmp_path, "door", 0, 0)
        add_segments(output, 4)
        before = playlist(output)
        assert "entries" not in json.loads((output.state_dir / "progress.json").read_text())
        restarted = CameraOutput(tmp_path, "door", 0, 0)
        assert restarted.progress.entries == output.progress.entries
        restarted._save()
        assert playlist(restarted) == before
        assert len(decoded_pts(output.dir / "index.m3u8")) == 4 * FRAMES

    def test_a_pruned_recording_reloads_without_the_pruned_entries(self, tmp_path: Path) -> None:
        """After a pass, a restart sees only the kept entries and the same media sequence."""
        policy = RetentionPolicy(max_bytes=1)
        output = CameraOutput(tmp_path, "door", 0, 0, policy=policy)
        add_segments(output, 4)
        assert output.prune() is not None
        restarted = CameraOutput(tmp_path, "door", 0, 0, policy=policy)
        assert [e["gop"] for e in restarted.progress.entries] == [3]
        restarted._save()
        assert tag(playlist(restarted), "EXT-X-MEDIA-SEQUENCE") == 3


class TestRenderedEntries:
    """The playlist rendered from its cache equals the playlist rendered afresh."""

    def test_growth_pruning_windows_and_a_longer_segment(self) -> None:
        """Appends, a pruned head, a window, a 3 s segment and its pruning: the same text at every step."""
        progress = CameraProgress(next_gop=0)
        cache = retention.RenderedEntries()
        steps: list[tuple[str, int]] = [("add", 5), ("prune", 2), ("add", 1), ("long", 1), ("add", 3)]
        steps += [("prune", 4), ("add", 2), ("prune", 3)]
        for step, count in steps:
            for _ in range(count):
                if step == "prune":
                    del progress.entries[0]
                    progress.pruned_segments += 1
                    continue
                gop = progress.next_gop
                duration = 3.0 if step == "long" else 0.4
                entry = {
                    "gop": gop,
                    "uri": f"seg_{gop:06d}.ts",
                    "duration": duration,
                    "discontinuity": gop == 3,
                }
                progress.entries.append(entry)
                progress.next_gop += 1
            for window in (0, 4):
                fresh = retention.playlist_text(progress, window, True)
                assert retention.playlist_text(progress, window, True, cache) == fresh, (step, window)
        assert "#EXT-X-TARGETDURATION:1" in retention.playlist_text(
            progress, 0, True, cache
        )  # the 3 s one went


class TestRetentionSettings:
    @pytest.mark.parametrize("key", ["retain_hours", "retain_max_gb"])
    def test_negative_is_refused_in_one_line(self, key: str) -> None:
        """sink.retain_* < 0: a ConfigError naming the key and 0's meaning."""
        from framepipe.core.errors import ConfigError

        with pytest.raises(ConfigError, match=rf"sink.{key} must be >= 0 \(0: keep all\)"):
            Settings().replace(sink={key: -1.0})


@pytest.mark.integration
class TestRetentionInARun:
    def test_a_run_with_a_size_limit_prunes_and_the_playlist_plays(self, tmp_path: Path) -> None:
        """`framepipe run --once` with retain_max_gb set small: the sink logs its passes, keeps the
        newest segments within the limit, and the playlist plays what is on disk."""
        env = {
            **os.environ,
            "FRAMEPIPE_LOCAL__STATE_DIR": str(tmp_path / "state"),
            "FRAMEPIPE_INFERENCE__MODELS_DIR": str(MODELS),
            "FRAMEPIPE_NATS__URL": f"nats://127.0.0.1:{free_port()}",
            "FRAMEPIPE_SINK__RETAIN_MAX_GB": "0.00015",  # 150 kB: a few of the clip's segments
        }
        argv = [sys.executable, "-m", "framepipe", "run", "--source", str(faces_clip()), "--once"]
        result = subprocess.run(
            argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False
        )
        assert result.returncode == 0, result.stderr[-3000:]
        camera = tmp_path / "output" / "cam1"
        lines = (camera / "index.m3u8").read_text().splitlines()
        listed = [line for line in lines if line.startswith("seg_")]
        on_disk = sorted(p.name for p in camera.glob("seg_*.ts"))
        assert listed == on_disk
        assert lines[-1] == "#EXT-X-ENDLIST"
        sequence = tag(lines, "EXT-X-MEDIA-SEQUENCE")
        assert sequence is not None
        assert sequence > 0
        assert listed[0] == f"seg_{sequence:06d}.ts"  # no gaps in this clip: sequence = first GOP
        passes = [
            json.loads(line)
            for line in (tmp_path / "state" / "logs" / "sink-0.log").read_text().splitlines()
            if '"recording.pruned"' in line
        ]
        assert passes
        assert sum(p["segments"] for p in passes) == sequence
        assert all(p["kept_bytes"] <= 150_000 or p["kept_segments"] == 1 for p in passes)
        assert decoded_pts(camera / "index.m3u8")
