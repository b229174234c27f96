"""Per-camera metrics from the sources KV bucket, exported by the sink (always one replica).

The gateway stamps its camera's source state (``running``, ``reconnecting``, ``ended``,
``stopped``, ``failed``) and ``updated_at`` on every GOP it publishes; reading them here
rather than in each gateway puts every camera on one scrape target that exists even
when a gateway pod does not, so "camera offline" is a rule over
``framepipe_camera_state`` and ``framepipe_camera_updated_timestamp_seconds``.
Keys are listed with a subject-filtered stream info and read by get (both within the
read-only JetStream calls every stage may make).
"""

from __future__ import annotations

from nats.js import JetStreamContext

from framepipe.core import health
from framepipe.core.sources import SourceState
from framepipe.core.topology import Names

#: every state a gateway writes (core/sources.py and stages/gateway/gateway.py).
STATES = ("running", "reconnecting", "ended", "stopped", "failed")


async def export_source_states(js: JetStreamContext) -> int:
    """Set the per-camera gauges from FP_SOURCES; return how many cameras were seen."""
    bucket = Names.SOURCES_BUCKET
    info = await js.stream_info(f"KV_{bucket}", subjects_filter=f"$KV.{bucket}.>")
    kv = await js.key_value(bucket)
    seen = 0
    for subject in info.state.subjects or {}:
        camera = subject.removeprefix(f"$KV.{bucket}.")
        entry = await kv.get(camera)
        if not entry.value:
            continue
        state = SourceState.from_json(entry.value)
        for name in STATES:
            health.CAMERA_STATE.labels(camera, name).set(1 if state.state == name else 0)
        health.CAMERA_UPDATED.labels(camera).set(state.updated_at)
        health.CAMERA_NEXT_GOP.labels(camera).set(state.next_gop)
        seen += 1
    return seen
