"""The published contract: JSON product streams, their JSON Schemas and the AsyncAPI document."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import msgpack
import pytest

from framepipe.core import asyncapi, messages, schemas
from framepipe.core.errors import SchemaError
from framepipe.core.messages import Detection, DetectionsMessage, FrameDetections, GapMessage, Headers
from framepipe.core.topology import STAGES, STREAMS, Names
from tests.helpers import NODE_MODULES, NODE_PROGRAMS, REPO

DOCS = REPO / "docs"


def _detections() -> DetectionsMessage:
    frames = (
        FrameDetections(
            30, 3000, (Detection((10.5, 20.25, 110.0, 140.75), 0.93), Detection((1, 2, 3, 4), 0.5))
        ),
        FrameDetections(31, 3100, ()),
    )
    return DetectionsMessage("lobby", 2, 0, 2, frames, "blazeface-full")


def _body(message: messages.Message) -> Any:
    return json.loads(messages.encode(message)[1])


def _validator(stream: str) -> jsonschema.Draft202012Validator:
    schema = schemas.stream_schema(stream)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


class TestProductMessages:
    """DETECTIONS bodies are JSON objects with a kind, readable by any client."""

    def test_detections_and_gaps_round_trip_as_json(self) -> None:
        """Both kinds encode to JSON with a Content-Type header and decode back unchanged."""
        for message in (_detections(), GapMessage("lobby", 7, 1_700_000_000.5, 3.25, "reconnected")):
            headers, body = messages.encode(message)
            assert headers[Headers.CONTENT_TYPE] == messages.JSON_CONTENT_TYPE
            assert json.loads(body)["kind"] == message.KIND
            assert messages.decode(headers, body, type(message)) == message

    def test_msgpack_detections_of_older_writers_still_decode(self) -> None:
        """A msgpack DETECTIONS body (no Content-Type, written before JSON) is still read."""
        message = _detections()
        headers = {Headers.VERSION: "2", Headers.KIND: "detections"}
        assert messages.decode(headers, msgpack.packb(message.to_wire()), DetectionsMessage) == message

    def test_json_body_of_the_wrong_kind_is_a_schema_error(self) -> None:
        """A JSON body whose kind member disagrees with its header is refused (→ DLQ)."""
        headers, _ = messages.encode(_detections())
        for body in (b'{"kind":"gap"}', b"[1,2]", b"not json"):
            with pytest.raises(SchemaError):
                messages.decode(headers, body, DetectionsMessage)

    def test_internal_kinds_stay_binary(self) -> None:
        """Only product streams carry JSON; the other streams' kinds keep msgpack envelopes."""
        for spec in STREAMS:
            formats = {cls.FORMAT for cls in schemas.STREAM_KINDS[spec.name]}
            assert formats <= ({"json"} if spec.product else {"msgpack"}), spec.name


class TestStreamSchemas:
    """The JSON Schemas accept what the publishers write and refuse what they never write."""

    def test_every_stream_says_what_it_carries(self) -> None:
        """STREAM_KINDS covers every stream (a new stream without an entry fails here)."""
        assert set(schemas.STREAM_KINDS) == {spec.name for spec in STREAMS}
        products = [spec.name for spec in schemas.product_streams()]
        assert Names.DETECTIONS in products
        assert all(schemas.STREAM_KINDS[name] or name in schemas.EVENT_STREAMS for name in products), (
            "a product stream without kinds"
        )

    def test_published_bodies_validate(self) -> None:
        """Real encoded detections and gap events validate against the DETECTIONS schema."""
        validator = _validator(Names.DETECTIONS)
        for message in (_detections(), GapMessage("cam", 0, 1.0, 0.0)):
            validator.validate(_body(message))

    @pytest.mark.parametrize(
        ("path", "value"),
        [
            (("frames", 0, "detections", 0, "box"), [1, 2, 3]),
            (("frames", 0, "detections", 0, "score"), 1.5),
            (("frames", 0, "pts"), "3000"),
            (("kind",), "faces"),
            (("gop",), None),
        ],
    )
    def test_malformed_bodies_are_refused(self, path: tuple[str | int, ...], value: object) -> None:
        """A wrong box, score, type, kind or a missing field fails validation."""
        body = _body(_detections())
        target = body
        for key in path[:-1]:
            target = target[key]
        if value is None:
            del target[path[-1]]
        else:
            target[path[-1]] = value
        assert not _validator(Names.DETECTIONS).is_valid(body)

    def test_schema_mirrors_the_dataclass_fields(self) -> None:
        """Every envelope field is a schema property; fields without defaults are required."""
        for cls in messages.KINDS.values():
            schema = schemas.kind_schema(cls)
            fields = {f.name for f in dataclasses.fields(cls)}
            assert set(schema["properties"]) - {"kind"} == fields, cls.KIND
            assert set(schema["required"]) <= set(schema["properties"]), cls.KIND

    def test_sink_lines_have_a_schema(self) -> None:
        """A detections.jsonl line as the sink writes it validates; one without camera does not."""
        frame = _body(_detections())["frames"][0]
        validator = jsonschema.Draft202012Validator(schemas.detections_line_schema())
        validator.validate({"camera": "lobby", "gop": 2, **frame})
        assert not validator.is_valid(frame)


class TestAsyncApiDocument:
    """docs/asyncapi.json is generated from the stage table and checked in up to date."""

    def test_checked_in_docs_are_current(self) -> None:
        """docs/asyncapi.json and docs/schemas/ equal what the code renders (`make asyncapi`)."""
        for rel, content in asyncapi.rendered_files().items():
            path = DOCS / rel
            assert path.is_file(), f"{rel} missing: run `make asyncapi`"
            assert path.read_text(encoding="utf-8") == content, f"{rel} is stale: run `make asyncapi`"

    def test_operations_follow_the_stage_table(self) -> None:
        """Every stage's publishes, DLQ subject and consumers appear as send/receive operations."""
        doc = asyncapi.document()
        ops = doc["operations"]
        for spec in STAGES:
            for stream in (s for s in STREAMS if s.name != Names.DLQ):  # the DLQ: below
                sends = f"{spec.name}-send-{stream.name.lower()}" in ops
                assert sends == (Names.wildcard(stream.name) in spec.publishes), (spec.name, stream.name)
            assert (f"{spec.name}-send-dlq" in ops) == spec.dead_letters
            for consumer in spec.consumers:
                op = ops[f"{spec.name}-receive-{consumer.durable}"]
                assert op["channel"] == {"$ref": f"#/channels/{consumer.stream.lower()}"}
        assert ops["gateway-send-detections"]["messages"] == [{"$ref": "#/channels/detections/messages/gap"}]

    def test_messages_carry_the_headers(self) -> None:
        """Each message lists the envelope headers; tailed kinds add Framepipe-Tail, JSON Content-Type."""
        found = asyncapi.document()["components"]["messages"]
        assert Headers.TAIL in found["frames"]["headers"]["required"]
        assert (
            found["detections"]["headers"]["properties"][Headers.CONTENT_TYPE]["const"] == "application/json"
        )
        assert found["detections"]["contentType"] == "application/json"
        assert found["gop"]["contentType"] == "application/msgpack"
        for name, message in found.items():
            if name == "event":  # plain JSON documents from the sink, not envelopes
                assert {Headers.CONTENT_TYPE, Headers.MSG_ID} <= set(message["headers"]["required"])
                continue
            assert {Headers.VERSION, Headers.KIND, Headers.CAMERA} <= set(message["headers"]["required"])


def _node(program: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    node = shutil.which("node")
    if node is None or not (NODE_MODULES / "@asyncapi" / "parser").is_dir():
        pytest.skip("node or the contract npm packages missing: run `make contract-tools`")
    env = {**os.environ, "NODE_PATH": str(NODE_MODULES)}
    return subprocess.run(
        [node, str(NODE_PROGRAMS / program), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


class TestAsyncApiParser:
    """The official AsyncAPI parser (npm) accepts the document and rejects a broken one."""

    @pytest.fixture(scope="class")
    def parsed(self, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
        """One parser run over docs/asyncapi.json and a copy whose operation points nowhere."""
        doc = copy.deepcopy(asyncapi.document())
        doc["operations"]["decoder-receive-decoder"]["channel"] = {"$ref": "#/channels/nowhere"}
        broken = tmp_path_factory.mktemp("asyncapi") / "broken.json"
        broken.write_text(json.dumps(doc))
        result = _node("validate-asyncapi.cjs", str(DOCS / "asyncapi.json"), str(broken))
        assert result.returncode == 1, result.stdout + result.stderr  # the broken one fails the run
        return broken, result.stdout

    def test_document_validates(self, parsed: tuple[Path, str]) -> None:
        """@asyncapi/parser reports no error on docs/asyncapi.json."""
        assert f"VALID {DOCS / 'asyncapi.json'}: asyncapi 3.0.0, {len(STREAMS)} channels" in parsed[1], (
            parsed[1]
        )

    def test_broken_document_is_rejected(self, parsed: tuple[Path, str]) -> None:
        """An operation pointing at a missing channel makes the parser fail (the check can fail)."""
        assert f"INVALID {parsed[0]}" in parsed[1], parsed[1]
