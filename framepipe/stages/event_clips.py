"""Event clips: an on-demand camera's alert, burnt in by the encoder around the alert.

An on-demand camera records its own video (overlay), and only watched GOPs are burnt in. An
alert (an ``alert.*`` event, e.g. ``alert.unknown_person``) is what someone will look at
later, so its GOPs get boxes in the pixels: ``[output] clip_gops_before`` GOPs before the
alert's GOP and ``clip_gops_after`` after it.

The sink is the one place that sees a camera's events in order, so it drives this (two calls
in ``stages/sink.py``):

- :meth:`EventClips.follow`, after the sink appended GOPs: a new alert of an on-demand camera
  becomes ``clips/<event id>.json`` (its GOPs; what was asked and received). Every GOP of a
  pending clip that the sink has recorded is asked of the encoder: an ``EncodeItem`` with
  ``clip=<event id>``, its detections from the sink's own per-GOP state, its VIDEO sequence
  from the recording segment. The GOPs before the alert are asked at once (still in VIDEO),
  the ones after as the sink records them.
- :meth:`EventClips.add_segment`, for each ``rendition="clip"`` segment the encoder returns:
  kept as a part until the clip has all its GOPs, then joined in GOP order into
  ``clips/<event id>.ts`` (MPEG-TS segments concatenate), and a line appended to
  ``clips/index.jsonl`` (event id, type, GOPs, file).

A GOP that is not recorded (dead-lettered) is dropped from the clip with one log line, and so
are GOPs after a camera's end, so such a clip still ends. Everything is in files: a restarted sink carries on.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import structlog
from nats.js import JetStreamContext

from framepipe.core import bus, messages
from framepipe.core.messages import EncodeItem, FrameDetections, Headers, SegmentMessage
from framepipe.core.settings import Settings
from framepipe.core.sources import SourceStates
from framepipe.core.topology import Names
from framepipe.stages.output_modes import OutputModes

log = structlog.get_logger("framepipe.event_clips")
CLIPS = "clips"
INDEX = "index.jsonl"
ON_DEMAND = "on-demand"


def _write_json(path: Path, value: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(value))
    os.replace(tmp, path)


class EventClips:
    """Asks the encoder for an on-demand camera's alert GOPs and joins what it returns."""

    def __init__(self, settings: Settings) -> None:
        self.root = Path(settings.sink.output_dir)
        self.before = settings.output.clip_gops_before
        self.after = settings.output.clip_gops_after
        self.modes = OutputModes(settings)
        self.js: JetStreamContext | None = None
        self.sources: SourceStates | None = None

    async def setup(self, js: JetStreamContext) -> None:
        self.js = js
        self.sources = SourceStates(js)
        await self.modes.setup(js)

    def _dir(self, camera: str) -> Path:
        return self.root / camera / CLIPS

    async def follow(self, camera: str, events: list[dict[str, Any]], recorded: int, state_dir: Path) -> None:
        """New alerts become clips; every recorded GOP (below ``recorded``) of a clip is asked for."""
        clips = self._dir(camera)
        for event in events:
            if not str(event.get("type", "")).startswith("alert.") or not event.get("id"):
                continue
            if (clips / f"{event['id']}.json").exists() or await self.modes.mode(camera) != ON_DEMAND:
                continue
            clips.mkdir(parents=True, exist_ok=True)
            gop = int(event["gop"])
            gops = list(range(max(0, gop - self.before), gop + self.after + 1))
            clip = {"event": event["id"], "type": event["type"], "gops": gops, "asked": [], "got": []}
            _write_json(clips / f"{event['id']}.json", clip)
            log.info("clip.started", camera=camera, event=event["id"], gops=f"{gops[0]}..{gops[-1]}")
        if not clips.is_dir():
            return
        # GOPs after a camera's end never come: a clip near the end is shorter.
        state = await self.sources.read(camera) if self.sources is not None else None
        end = state.next_gop if state is not None and state.state == "ended" else None
        for path in sorted(clips.glob("*.json")):
            clip = json.loads(path.read_text())
            if clip.get("file"):
                continue
            changed = False
            if end is not None and any(g >= end for g in clip["gops"]):
                clip["gops"] = [g for g in clip["gops"] if g < end]
                changed = True
            for gop in [g for g in clip["gops"] if g < recorded and g not in clip["asked"]]:
                changed = True
                if not await self._ask(camera, clip["event"], gop, state_dir):
                    clip["gops"].remove(gop)  # never recorded (a gap) or no VIDEO sequence
                    continue
                clip["asked"].append(gop)
            if changed:
                _write_json(path, clip)
                self._join_if_complete(camera, path, clip)

    async def _ask(self, camera: str, event: str, gop: int, state_dir: Path) -> bool:
        meta_file = state_dir / f"{gop:06d}.json"
        meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
        if not meta.get("video_seq"):
            log.warning(
                "clip.gop_missing",
                camera=camera,
                event=event,
                gop=gop,
                detail="not recorded (a gap) or from an older stage: the clip goes without this GOP",
            )
            return False
        frames = tuple(FrameDetections.from_wire(f) for f in meta["frames"])
        item = EncodeItem(camera, gop, int(meta["video_seq"]), frames, clip=event)
        assert self.js is not None
        headers, body = messages.encode(item)
        headers[Headers.STAGE] = Names.SINK
        msg_id = Names.msg_id(camera, gop, f"clip-{event}")
        await bus.publish(self.js, Names.subject(Names.ENCODE, camera), body, headers, msg_id)
        return True

    def add_segment(self, segment: SegmentMessage) -> None:
        """One burnt-in GOP of clip ``segment.clip``: kept until the clip is whole, then joined."""
        clips = self._dir(segment.camera)
        path = clips / f"{segment.clip}.json"
        if not path.is_file():
            return  # a clip this sink no longer knows (its files were removed): nothing to add to
        parts = clips / f".{segment.clip}"
        parts.mkdir(parents=True, exist_ok=True)
        (parts / f"{segment.gop:06d}.ts").write_bytes(segment.data)
        clip = json.loads(path.read_text())
        if segment.gop not in clip["got"]:
            clip["got"].append(segment.gop)
            _write_json(path, clip)
        self._join_if_complete(segment.camera, path, clip)

    def _join_if_complete(self, camera: str, path: Path, clip: dict[str, Any]) -> None:
        if clip.get("file") or not set(clip["gops"]) <= set(clip["got"]) or not clip["gops"]:
            return
        clips = path.parent
        parts = clips / f".{clip['event']}"
        name = f"{clip['event']}.ts"
        tmp = clips / f".{name}.tmp"
        with open(tmp, "wb") as out:
            for gop in sorted(clip["gops"]):
                out.write((parts / f"{gop:06d}.ts").read_bytes())
        os.replace(tmp, clips / name)
        for part in parts.glob("*.ts"):
            part.unlink()
        parts.rmdir()
        clip["file"] = name
        _write_json(path, clip)
        with open(clips / INDEX, "a", encoding="utf-8") as index:
            line = {"event": clip["event"], "type": clip["type"], "gops": sorted(clip["gops"]), "file": name}
            index.write(json.dumps(line) + "\n")
        log.info("clip.done", camera=camera, event=clip["event"], gops=len(clip["gops"]), file=name)
