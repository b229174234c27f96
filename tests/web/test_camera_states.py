"""The console's reads of the buckets and consumers, on a real nats-server: who registered,
each camera's output mode and gateway state (:class:`CameraStates`), each stage's backlog
(:func:`pipeline_status`)."""

from __future__ import annotations

from nats.js import JetStreamContext

from framepipe.core import topology
from framepipe.core.sources import SourceState
from framepipe.core.topology import Names
from framepipe.stages.output_modes import set_mode
from framepipe.web.cameras import CameraStates
from framepipe.web.index import OutputIndex, Segment
from framepipe.web.pipeline_status import pipeline_status


async def _register(js: JetStreamContext, state: SourceState) -> None:
    kv = await js.key_value(Names.SOURCES_BUCKET)
    await kv.put(state.camera, state.to_json())


def _segment(gop: int) -> Segment:
    return Segment(gop=gop, seq=gop + 1, duration=1.0, discontinuity=False, frames=30, faces=0, stored_at=0.0)


class TestCameraStates:
    async def test_no_camera_yet_is_an_empty_view(self, js: JetStreamContext) -> None:
        """An empty bucket: nothing registered, no mode, no state, and no error."""
        states = CameraStates("burn-in")
        await states.refresh(js, OutputIndex())
        assert (states.registered, states.output_modes, states.source_states) == (set(), {}, {})

    async def test_reads_each_registered_cameras_mode_and_state(self, js: JetStreamContext) -> None:
        """A camera's own mode wins over the default; an ended camera's end reaches the index."""
        await _register(js, SourceState("cam-a", "a.mp4", state="ended", first_gop=0, next_gop=2))
        await _register(js, SourceState("cam-b", "rtsp://127.0.0.1/b"))
        await set_mode(js, "cam-a", "overlay")
        index = OutputIndex()
        for gop in (0, 1):
            index.add_segment("cam-a", _segment(gop))
        states = CameraStates("burn-in")
        await states.refresh(js, index)
        assert states.registered == {"cam-a", "cam-b"}
        assert states.output_modes == {"cam-a": "overlay", "cam-b": "burn-in"}
        assert states.source_states == {"cam-a": "ended", "cam-b": "running"}
        assert [row["ended"] for row in index.summary()] == [True]

    async def test_a_camera_seen_only_in_segments_gets_its_mode(self, js: JetStreamContext) -> None:
        """A camera known only from its segments (its gateway gone) is still read: mode, no state."""
        await set_mode(js, "cam-c", "on-demand")
        index = OutputIndex()
        index.add_segment("cam-c", _segment(0))
        states = CameraStates("burn-in")
        await states.refresh(js, index)
        assert states.registered == set()
        assert states.output_modes == {"cam-c": "on-demand"}
        assert states.source_states == {}

    async def test_a_deleted_camera_is_no_longer_registered(self, js: JetStreamContext) -> None:
        """Deleting a camera's key leaves a delete marker: the next refresh drops the camera."""
        await _register(js, SourceState("cam-a", "a.mp4"))
        states = CameraStates("burn-in")
        await states.refresh(js, OutputIndex())
        assert states.registered == {"cam-a"}
        await (await js.key_value(Names.SOURCES_BUCKET)).delete("cam-a")
        await states.refresh(js, OutputIndex())
        assert states.registered == set()


class TestPipelineStatus:
    async def test_each_stage_has_its_backlog_and_replicas(self, js: JetStreamContext) -> None:
        """Every stage with a consumer is listed; a GOP waiting on VIDEO is its consumers' lag."""
        await js.publish(Names.subject(Names.VIDEO, "cam-a"), b"gop")
        status = await pipeline_status(js, lambda: {"decoder": 2})
        stages = status["stages"]
        assert set(stages) == {spec.stage for spec in topology.consumer_specs()}
        video_stages = {spec.stage for spec in topology.consumer_specs() if spec.stream == Names.VIDEO}
        assert video_stages
        for stage in video_stages:
            assert stages[stage]["lag"] == stages[stage]["pending"] + stages[stage]["ack_pending"] >= 1
        others = set(stages) - video_stages
        assert all(stages[stage]["lag"] == 0 for stage in others)
        assert stages["decoder"]["replicas"] == 2
        assert all(row["replicas"] == 0 for name, row in stages.items() if name != "decoder")

    async def test_a_missing_consumer_leaves_its_stage_out(self, js: JetStreamContext) -> None:
        """A deleted consumer is absent, not an error (a stage not deployed yet)."""
        spec = topology.consumer_specs()[0]
        await js.delete_consumer(spec.stream, spec.durable)
        stages = (await pipeline_status(js, dict))["stages"]
        remaining = {s.stage for s in topology.consumer_specs() if s.durable != spec.durable}
        assert set(stages) == remaining
