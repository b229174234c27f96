"""Camera sources: their progress in the sources bucket, credentials, live or file.

The gateway writes a camera's :class:`SourceState`; the sink, the web server and
``framepipe status`` read it. A source URL may hold credentials: :func:`redact`
removes them from anything stored or logged, everywhere.
"""

from __future__ import annotations

import json
import os
import re
import urllib.parse
from dataclasses import dataclass
from typing import Any

from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from framepipe.core.topology import Names

#: URL schemes of sources that never end on their own (reconnected, restarted if they crash).
LIVE_SCHEMES = (
    "rtsp://",
    "rtsps://",
    "rtmp://",
    "rtmps://",
    "srt://",
    "udp://",
    "tcp://",
    "http://",
    "https://",
)
USERNAME_ENV = "FRAMEPIPE_SOURCE_USERNAME"
PASSWORD_ENV = "FRAMEPIPE_SOURCE_PASSWORD"
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s'\"]*@")


def is_live(source: str) -> bool:
    return source.lower().startswith(LIVE_SCHEMES)


def with_credentials(source: str, env: dict[str, str] | None = None) -> str:
    """Insert credentials from the environment into a URL that has none."""
    env = dict(os.environ) if env is None else env
    user = env.get(USERNAME_ENV, "")
    if not user or "://" not in source:
        return source
    parts = urllib.parse.urlsplit(source)
    if "@" in parts.netloc:
        return source
    auth = urllib.parse.quote(user, safe="")
    password = env.get(PASSWORD_ENV, "")
    if password:
        auth += ":" + urllib.parse.quote(password, safe="")
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{auth}@{parts.netloc}"))


def redact(source: str) -> str:
    """Drop credentials from a URL before it is stored or logged."""
    return _USERINFO.sub(lambda m: f"{m.group('scheme')}***@", source)


@dataclass
class SourceState:
    """Per-camera progress kept in the sources KV bucket."""

    camera: str
    source: str
    state: str = "running"
    next_gop: int = 0
    next_frame: int = 0
    first_gop: int = 0
    updated_at: float = 0.0
    #: frames missing from the input (holes in its timestamps; see media.loss).
    lost_frames: int = 0
    #: live GOPs dropped because the JetStream store was full (stages/gateway/store_full.py).
    dropped_gops: int = 0
    #: measured GOP messages a second (fps / GOP frames, smoothed; stages/gateway/profile.py):
    #: what feed-forward scaling counts for this camera. 0 until the gateway has seen a GOP.
    gops_per_s: float = 0.0
    fps: float = 0.0

    def to_json(self) -> bytes:
        return json.dumps(self.__dict__).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> SourceState:
        data: dict[str, Any] = json.loads(raw)
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


async def read_source_state(js: JetStreamContext, camera: str) -> SourceState | None:
    """One camera's state, once (a process that reads it often keeps a :class:`SourceStates`)."""
    return await SourceStates(js).read(camera)


class SourceStates:
    """The sources bucket, opened once. Opening a bucket asks the server for its stream's
    info; the sink reads every camera's state at each of its GOPs, and opening the bucket
    for each read doubled the requests."""

    def __init__(self, js: JetStreamContext) -> None:
        self.js = js
        self._kv: KeyValue | None = None

    async def read(self, camera: str) -> SourceState | None:
        if self._kv is None:
            self._kv = await self.js.key_value(Names.SOURCES_BUCKET)
        try:
            entry = await self._kv.get(camera)
        except KeyNotFoundError:
            return None
        return SourceState.from_json(entry.value) if entry.value else None
