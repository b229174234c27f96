"""The face gallery: people and their face descriptors, and matching against them.

A person is a name and one 128-D dlib descriptor per enrolment photo; photos are
never stored. The gallery lives in two places that hold the same JSON records:

- a **file store**, ``<analysis.gallery_dir>`` (default ``<local.state_dir>/faces``),
  one ``<name>.json`` per person. It is what ``framepipe faces`` edits when no system
  runs, and it survives ``framepipe run`` (which starts JetStream from scratch):
  the supervisor copies it into the bucket at start.
- the **KV bucket** ``FP_FACES`` (key = name) in a running system; every analysis
  replica watches it, so an enrolment reaches every replica on every node at once.

Matching (:class:`GalleryIndex`) is one matrix product: the descriptors of every
person stacked into an ``(N, 128)`` float32 matrix with their squared norms kept
beside it, so ``|q - g|² = |q|² + |g|² - 2 q·g`` gives the Euclidean distance
dlib's 0.6 threshold is defined on, for a batch of queries against all N rows,
followed by one ``argmin`` per query. 10 000 rows are 5 MB and one query costs a
few hundred microseconds (``bench/faces.py``); no approximate index is needed at
office scale.
"""

from __future__ import annotations

import base64
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError

from framepipe.core import bus
from framepipe.core.errors import ConfigError, SchemaError
from framepipe.core.settings import Settings
from framepipe.core.topology import Names

DESCRIPTOR_SIZE = 128
PERSON_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
UNKNOWN = "unknown"

Vectors = npt.NDArray[np.float32]


def validate_person_name(name: str) -> str:
    """A person's name is a KV key and a file name: check it once, everywhere."""
    if not PERSON_NAME.match(name) or name in {UNKNOWN, ".", ".."}:
        raise ConfigError(
            f"person name {name!r} is invalid: use 1-64 letters, digits, '_', '.' or '-' "
            f"(not {UNKNOWN!r}; it becomes a file name and a KV key)"
        )
    return name


@dataclass(frozen=True)
class Person:
    """One enrolled person: a descriptor per enrolment photo."""

    name: str
    embeddings: Vectors
    sources: tuple[str, ...] = ()
    enrolled_at: float = field(default_factory=time.time)

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "name": self.name,
                "enrolled_at": round(self.enrolled_at, 3),
                "sources": list(self.sources),
                # float32 little-endian, base64: 684 characters per descriptor.
                "embeddings": [
                    base64.b64encode(row.astype("<f4").tobytes()).decode() for row in self.embeddings
                ],
            }
        ).encode()

    @classmethod
    def from_json(cls, raw: bytes | str) -> Person:
        try:
            data = json.loads(raw)
            rows = [np.frombuffer(base64.b64decode(e), dtype="<f4") for e in data["embeddings"]]
            name = validate_person_name(str(data["name"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise SchemaError(f"gallery record is malformed: {exc}"[:200]) from None
        if not rows or any(r.shape != (DESCRIPTOR_SIZE,) for r in rows):
            raise SchemaError(f"gallery record {name!r} needs {DESCRIPTOR_SIZE}-float descriptors")
        return cls(
            name,
            np.stack(rows).astype(np.float32),
            tuple(str(s) for s in data.get("sources", ())),
            float(data.get("enrolled_at", 0.0)),
        )


@dataclass(frozen=True)
class Match:
    """The nearest gallery person of one descriptor; ``name`` is ``unknown`` beyond the threshold."""

    name: str
    distance: float

    @property
    def known(self) -> bool:
        return self.name != UNKNOWN


class GalleryIndex:
    """Every person's descriptors as one matrix; nearest person by one matmul + argmin."""

    def __init__(self, people: list[Person], threshold: float = 0.6) -> None:
        self.threshold = threshold
        self.people = sorted(people, key=lambda p: p.name)
        rows = [p.embeddings for p in self.people]
        self.matrix: Vectors = (
            np.ascontiguousarray(np.concatenate(rows), dtype=np.float32)
            if rows
            else np.zeros((0, DESCRIPTOR_SIZE), np.float32)
        )
        self.norms: Vectors = np.einsum("ij,ij->i", self.matrix, self.matrix).astype(np.float32)
        self.owner = np.repeat(np.arange(len(self.people)), [len(r) for r in rows])

    def __len__(self) -> int:
        return len(self.people)

    def match(self, queries: Vectors) -> list[Match]:
        """The nearest person of each row of ``queries`` (shape (Q, 128))."""
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        if not len(self.matrix):
            return [Match(UNKNOWN, -1.0) for _ in range(len(queries))]
        q_norms = np.einsum("ij,ij->i", queries, queries)
        squared = q_norms[:, None] + self.norms[None, :] - 2.0 * (queries @ self.matrix.T)
        nearest = np.argmin(squared, axis=1)
        out = []
        for row, column in enumerate(nearest):
            distance = float(np.sqrt(max(float(squared[row, column]), 0.0)))
            name = self.people[int(self.owner[column])].name
            out.append(Match(name if distance <= self.threshold else UNKNOWN, distance))
        return out


# -- the file store ------------------------------------------------------------------


class FileGallery:
    """``<dir>/<name>.json`` per person, written atomically."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory

    def _path(self, name: str) -> Path:
        return self.dir / f"{validate_person_name(name)}.json"

    def put(self, person: Person) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self._path(person.name)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(person.to_json())
        os.replace(tmp, path)

    def remove(self, name: str) -> bool:
        path = self._path(name)
        if not path.is_file():
            return False
        path.unlink()
        return True

    def people(self) -> list[Person]:
        if not self.dir.is_dir():
            return []
        return [Person.from_json(p.read_bytes()) for p in sorted(self.dir.glob("*.json"))]


def merge(person: Person, existing: Person | None) -> Person:
    """Enrolling a known name again adds its photos' descriptors to the ones it has."""
    if existing is None:
        return person
    return Person(
        person.name,
        np.concatenate([existing.embeddings, person.embeddings]).astype(np.float32),
        existing.sources + person.sources,
        existing.enrolled_at,
    )


def summary(person: Person) -> dict[str, Any]:
    """What ``faces list`` shows of a person."""
    return {
        "name": person.name,
        "photos": len(person.embeddings),
        "enrolled_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(person.enrolled_at)),
    }


# -- the KV bucket (a running system) ---------------------------------------------------


async def kv_get(js: JetStreamContext, name: str) -> Person | None:
    kv = await js.key_value(Names.FACES_BUCKET)
    try:
        entry = await kv.get(validate_person_name(name))
    except KeyNotFoundError:
        return None
    return Person.from_json(entry.value) if entry.value else None


async def kv_put(js: JetStreamContext, person: Person) -> None:
    kv = await js.key_value(Names.FACES_BUCKET)
    await kv.put(validate_person_name(person.name), person.to_json())


async def kv_remove(js: JetStreamContext, name: str) -> bool:
    kv = await js.key_value(Names.FACES_BUCKET)
    if await kv_get(js, name) is None:
        return False
    await kv.delete(name)
    return True


async def kv_people(js: JetStreamContext) -> list[Person]:
    people = []
    for key in await bus.bucket_keys(js, Names.FACES_BUCKET):
        person = await kv_get(js, key)
        if person is not None:
            people.append(person)
    return people


async def seed_bucket(js: JetStreamContext, files: FileGallery) -> int:
    """Copy the file store into the bucket (``framepipe run`` starts JetStream afresh)."""
    people = files.people()
    for person in people:
        await kv_put(js, person)
    return len(people)


async def seed_from_files(settings: Settings) -> int:
    """``framepipe run``: the gallery of this machine into the fresh system's bucket."""
    files = FileGallery(settings.analysis.gallery_path(settings.local.state_dir))
    if not files.people():
        return 0
    nc = await bus.connect(settings, "framepipe-gallery-seed", retry_initial=False)
    try:
        return await seed_bucket(nc.jetstream(timeout=10.0), files)
    finally:
        await nc.close()
