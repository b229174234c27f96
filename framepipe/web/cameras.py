"""Cameras the console lists before they have output: every camera whose gateway registered in
``FP_SOURCES``. Its instant view plays from the gateway's first packet, long before its first
annotated segment (a GOP plus the pipeline) exists. Also each camera's output mode, so the
console offers the burn-in live rendition (``live.m3u8``) where there is one (on-demand).
:class:`CameraStates` keeps all three for the server, refreshed from the buckets each second."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from framepipe.core.bus import bucket_keys
from framepipe.core.settings import OUTPUT_MODES
from framepipe.core.sources import SourceStates
from framepipe.core.topology import CAMERA_NAME, Names
from framepipe.web.index import OutputIndex


@dataclass
class CameraStates:
    """The console's view of the buckets: who registered, each camera's mode and gateway state."""

    default_mode: str
    #: cameras whose gateway registered (FP_SOURCES), listed before their first segment.
    registered: set[str] = field(default_factory=set)
    output_modes: dict[str, str] = field(default_factory=dict)
    #: each camera's gateway state (FP_SOURCES): running, reconnecting, failed, ended, stopped.
    source_states: dict[str, str] = field(default_factory=dict)

    async def refresh(self, js: JetStreamContext, index: OutputIndex) -> None:
        """Read every known camera's mode and state once; a camera whose read fails keeps its last.
        Each bucket is opened once per refresh (opening one asks the server for its stream)."""
        sources = SourceStates(js)
        with contextlib.suppress(Exception):  # no bucket or no key yet: nothing registered
            self.registered = set(await registered_cameras(js, sources))
        cameras = sorted(self.registered | set(index.cameras()))
        with contextlib.suppress(Exception):  # no bucket yet: every mode stays as it was
            modes = await js.key_value(Names.OUTPUT_MODES_BUCKET)
            for camera in cameras:
                with contextlib.suppress(Exception):
                    self.output_modes[camera] = await output_mode(modes, camera, self.default_mode)
        for camera in cameras:
            with contextlib.suppress(Exception):
                state = await sources.read(camera)
                if state is not None:
                    # running / reconnecting / failed / ended / stopped: the tile's badge.
                    self.source_states[camera] = state.state
                    ended = state.next_gop if state.state == "ended" else None
                    index.set_source(camera, state.first_gop, ended)


async def registered_cameras(js: JetStreamContext, sources: SourceStates) -> list[str]:
    """The bucket's keys (:func:`framepipe.core.bus.bucket_keys`) that hold a camera's state."""
    keys = await bucket_keys(js, Names.SOURCES_BUCKET)
    # A deleted key's subject holds its delete marker: only cameras with a state are registered.
    return sorted([k for k in keys if CAMERA_NAME.match(k) and await sources.read(k) is not None])


async def output_mode(modes: KeyValue, camera: str, default: str) -> str:
    """The camera's own mode from ``FP_OUTPUT_MODES`` (``modes``), else ``default`` (as the
    stages read it)."""
    try:
        entry = await modes.get(camera)
    except KeyNotFoundError:
        return default
    value = (entry.value or b"").decode(errors="replace")
    return value if value in OUTPUT_MODES else default


def registered_only(camera: str) -> dict[str, Any]:
    """``/api/cameras``'s entry for a camera with no segment yet (the index's keys, all empty)."""
    return {
        "camera": camera,
        "segments": 0,
        "last_gop": None,
        "gaps": [],
        "ended": False,
        "frames_with_faces": 0,
        "frames": 0,
        "detections_total": 0,
        "last_segment_at": None,
    }
