"""Who may talk to NATS and about what: one table for the cluster and the local server.

Every process kind connects as its own user; a user may publish only to its
own output subjects, its DLQ subject, its own consumer's API and acks, and a
few read-only JetStream calls. ``framepipe.cluster.nats`` renders the table into the
cluster's ``nats.conf``; :func:`authorization_block` renders the same table
for the embedded nats-server, whose generated passwords live in a 0600 file in
the local state dir (``nats-auth.json``), next to the URL they belong to, so
local CLI tools (status, cameras, dlq, web) connect as the admin user without
being told.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from framepipe.core.settings import Settings
from framepipe.core.topology import USERS, Names, process_kind, stage_spec

ADMIN = Names.ADMIN
# Read-only JetStream API calls any stage may make (stream/KV info, get by sequence).
JS_READ = (
    "$JS.API.INFO",
    "$JS.API.STREAM.NAMES",
    "$JS.API.STREAM.INFO.*",
    "$JS.API.STREAM.MSG.GET.*",
    "$JS.API.DIRECT.GET.>",
)
AUTH_FILE = "nats-auth.json"


def permissions(user: str) -> dict[str, list[str]]:
    """Subjects ``user`` may publish to and subscribe on (replies come to ``_INBOX``),
    from the stage table: its outputs, buckets, consumers' API and acks, and DLQ subject."""
    if user == ADMIN:
        # live.> and dets.>: the web server's instant view reads them as core NATS subscriptions.
        live = [f"{Names.LIVE_PREFIX}.>", Names.wildcard(Names.DETECTIONS)]
        return {"publish": ["$JS.API.>", "$KV.>"], "subscribe": ["_INBOX.>", *live]}
    spec = stage_spec(user)
    publish = [*JS_READ, *spec.publishes, *(Names.kv_subjects(bucket) for bucket in spec.writes_buckets)]
    for consumer in spec.consumers:
        publish += [
            f"$JS.API.CONSUMER.INFO.{consumer.stream}.{consumer.durable}",
            f"$JS.API.CONSUMER.MSG.NEXT.{consumer.stream}.{consumer.durable}",
            f"$JS.ACK.{consumer.stream}.{consumer.durable}.>",
        ]
    for bucket in spec.watches_buckets:
        # A KV watch is an ephemeral ordered consumer with flow control on the bucket's stream.
        publish += [
            f"$JS.API.CONSUMER.CREATE.KV_{bucket}.>",
            f"$JS.API.CONSUMER.CREATE.KV_{bucket}",
            f"$JS.API.CONSUMER.DELETE.KV_{bucket}.>",
            f"$JS.API.CONSUMER.INFO.KV_{bucket}.>",
            "$JS.FC.>",
        ]
    if spec.dead_letters:
        publish.append(Names.dlq_subject(user))
    return {"publish": publish, "subscribe": ["_INBOX.>"]}


def user_for_process(name: str) -> str:
    """The NATS user of a supervised process (``decoder-0``, ``gateway-lobby``, ``web``)."""
    kind = process_kind(name)
    return kind if kind in USERS else ADMIN


def authorization_block(passwords: dict[str, str]) -> str:
    """nats-server ``authorization`` with one user per process kind and the table's permissions.

    The admin user (the supervisor, ``framepipe setup``/``status``/``cameras``/``dlq``/``web``
    and the local console) is not restricted locally: it also creates the ordered
    consumers and KV watchers whose flow control replies go to ``$JS.FC``.
    """
    q = json.dumps
    lines = ["authorization {", "  users: ["]
    for user in USERS:
        grant = ""
        if user != ADMIN:
            perms = permissions(user)
            grant = (
                f", permissions: {{publish: {{allow: {q(perms['publish'])}}}, "
                f"subscribe: {{allow: {q(perms['subscribe'])}}}}}"
            )
        lines.append(f"    {{user: {q(user)}, password: {q(passwords[user])}{grant}}}")
    lines += ["  ]", "}"]
    return "\n".join(lines) + "\n"


def write_private(path: Path, data: str | bytes) -> None:
    """Write a file only its owner can read (0600), also when it already existed wider."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data.encode() if isinstance(data, str) else data)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class LocalAuth:
    """What ``nats-auth.json`` holds: the local server's URL, its CA, and one password per user."""

    url: str
    passwords: dict[str, str]
    tls_ca: str = ""

    def __repr__(self) -> str:  # never show the passwords
        return f"LocalAuth(url={self.url!r}, users={sorted(self.passwords)}, tls_ca={self.tls_ca!r})"


def read_local_auth(state_dir: Path) -> LocalAuth | None:
    try:
        data = json.loads((state_dir / AUTH_FILE).read_text())
        passwords = {str(k): str(v) for k, v in dict(data["passwords"]).items()}
        return LocalAuth(str(data.get("url", "")), passwords, str(data.get("tls_ca", "")))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def ensure_passwords(state_dir: Path) -> dict[str, str]:
    """The local users' passwords: generated at first run, then kept (0600 file)."""
    known = read_local_auth(state_dir)
    passwords = dict(known.passwords) if known else {}
    if all(passwords.get(user) for user in USERS):
        return passwords
    for user in USERS:
        passwords.setdefault(user, secrets.token_urlsafe(32))
    url, ca = (known.url, known.tls_ca) if known else ("", "")
    save_local_auth(state_dir, LocalAuth(url, passwords, ca))
    return passwords


def save_local_auth(state_dir: Path, auth: LocalAuth) -> None:
    body = {"url": auth.url, "tls_ca": auth.tls_ca, "passwords": auth.passwords}
    write_private(state_dir / AUTH_FILE, json.dumps(body, indent=2) + "\n")


def forget_url(state_dir: Path) -> None:
    """The server stopped: keep the passwords, stop pointing tools at a dead URL."""
    known = read_local_auth(state_dir)
    if known is not None and known.url:
        with contextlib.suppress(OSError):
            save_local_auth(state_dir, LocalAuth("", known.passwords, known.tls_ca))


def client_credentials(settings: Settings) -> tuple[str, str, str]:
    """``(user, password, tls_ca)`` a client should use.

    Explicit settings win. Otherwise, when ``nats.url`` is the URL of the local
    server that ``local.state_dir`` belongs to, its admin credentials and CA;
    no credentials are ever sent to any other server.
    """
    nats = settings.nats
    if nats.user:
        return nats.user, nats.password, nats.tls_ca
    local = read_local_auth(Path(settings.local.state_dir))
    if local is None or not local.url or local.url != nats.url:
        return "", "", nats.tls_ca
    password = local.passwords.get(ADMIN, "")
    return (ADMIN if password else ""), password, nats.tls_ca or local.tls_ca
