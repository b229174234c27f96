"""``framepipe faces enroll|list|remove``: the face gallery, with or without a running system.

The gallery of this machine is a file store (``analysis.gallery_dir``, default
``<local.state_dir>/faces``) that survives ``framepipe run`` restarts; when a system is
reachable (a running ``framepipe run``, or ``nats.url`` pointing at a cluster's NATS)
the same record also goes into its ``FP_FACES`` bucket, which every analysis replica
watches. Photos are read, embedded and forgotten: only the descriptors are stored.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, TypeVar

import numpy as np
import typer
from nats.js import JetStreamContext

from framepipe.cli.common import ConfigOption, attached_settings, out
from framepipe.cli.errors import Typer
from framepipe.core import bus, gallery
from framepipe.core.errors import BusError, ConfigError
from framepipe.core.gallery import FileGallery, Person
from framepipe.core.settings import Settings

app = Typer(help="Enrol, list and remove the people the analysis stage recognises.", no_args_is_help=True)
T = TypeVar("T")


def _reachable(settings: Settings) -> bool:
    try:
        socket.create_connection(settings.nats.host_port, timeout=1.0).close()
    except OSError:
        return False
    return True


def _with_js(settings: Settings, fn: Callable[[JetStreamContext], Awaitable[T]]) -> T:
    async def go() -> T:
        nc = await bus.connect(settings, "framepipe-faces", retry_initial=False)
        try:
            return await fn(nc.jetstream(timeout=10.0))
        finally:
            await nc.close()

    try:
        return asyncio.run(go())
    except (TimeoutError, OSError) as exc:
        raise BusError(f"talking to NATS failed ({type(exc).__name__}: {exc}); is the system up?") from None


def _stores(config: Path | None) -> tuple[Settings, FileGallery, bool]:
    settings, _ = attached_settings(config)
    files = FileGallery(settings.analysis.gallery_path(settings.local.state_dir))
    return settings, files, _reachable(settings)


@app.command("enroll")
def enroll(
    name: Annotated[str, typer.Argument(help="The person's name (letters, digits, '_', '.', '-').")],
    images: Annotated[list[Path], typer.Argument(help="Photos of that person, one face each.")],
    config: ConfigOption = None,
) -> None:
    """Add a person (or more photos of a known one) to the gallery."""
    from framepipe.stages.analysis.embedder import FaceEmbedder

    gallery.validate_person_name(name)
    settings, files, live = _stores(config)
    embedder = FaceEmbedder()
    # Every photo is checked before anything is stored: one bad photo changes nothing.
    rows = [embedder.enrol(path, settings.analysis.min_face_px) for path in images]
    person = Person(name, np.stack(rows).astype(np.float32), tuple(p.name for p in images))
    existing = next((p for p in files.people() if p.name == name), None)
    if live:
        existing = _with_js(settings, lambda js: gallery.kv_get(js, name)) or existing
    merged = gallery.merge(person, existing)
    files.put(merged)
    where = str(files.dir)
    if live:
        _with_js(settings, lambda js: gallery.kv_put(js, merged))
        where += f" and the running system ({settings.nats.url})"
    out.print(f"{name}: {len(merged.embeddings)} photo(s) enrolled in {where}", highlight=False)


@app.command("list")
def list_cmd(config: ConfigOption = None) -> None:
    """The enrolled people: name, photos, when, and where they are stored."""
    settings, files, live = _stores(config)
    found: dict[str, tuple[Person, list[str]]] = {p.name: (p, ["file"]) for p in files.people()}
    if live:
        for person in _with_js(settings, gallery.kv_people):
            found.setdefault(person.name, (person, []))[1].append("system")
    for name in sorted(found):
        person, where = found[name]
        info = gallery.summary(person)
        typer.echo(f"{name}\t{info['photos']}\t{info['enrolled_at']}\t{'+'.join(where)}")


@app.command("remove")
def remove(
    name: Annotated[str, typer.Argument(help="The person's name.")],
    config: ConfigOption = None,
) -> None:
    """Forget a person (their descriptors) everywhere this machine reaches."""
    gallery.validate_person_name(name)
    settings, files, live = _stores(config)
    removed = files.remove(name)
    if live:
        removed = _with_js(settings, lambda js: gallery.kv_remove(js, name)) or removed
    if not removed:
        raise ConfigError(f"no person named {name}: see `framepipe faces list`")
    out.print(f"{name} removed", highlight=False)
