"""The web server's token rules: who must present a token, where a request carries it.

Bound to loopback (and ``web.require_token = "auto"``) no token is needed; otherwise every path
but ``/healthz`` needs ``web.token`` (or one generated at start): ``?token=`` (which also sets a
cookie, so the console's and hls.js's relative requests carry it), ``Authorization: Bearer``,
or that cookie.
"""

from __future__ import annotations

import contextlib
import ipaddress
import secrets
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import parse_qs

from framepipe.core.settings import WebSettings

TOKEN_COOKIE = "framepipe_token"
UNAUTHORIZED = (
    b"401: this server needs its token: open the URL `framepipe web` printed (.../?token=...), "
    b"or send `Authorization: Bearer <token>`\n"
)


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``; any other name or address is exposed."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def resolve_token(web: WebSettings, host: str) -> str | None:
    """The token requests must carry, or None when none is needed (loopback, ``auto``)."""
    if web.require_token == "auto" and is_loopback(host):
        return None
    return web.token or secrets.token_urlsafe(24)


def presented_token(path: str, headers: Any) -> tuple[str, bool]:
    """The token a request carries, and whether it came in the query string."""
    query = parse_qs(path.partition("?")[2]).get("token")
    if query:
        return query[0], True
    scheme, _, value = str(headers.get("Authorization", "")).partition(" ")
    if scheme.lower() == "bearer" and value:
        return value.strip(), False
    cookie = SimpleCookie()
    with contextlib.suppress(CookieError):
        cookie.load(str(headers.get("Cookie", "")))
    morsel = cookie.get(TOKEN_COOKIE)
    return (morsel.value if morsel else ""), False


def tokenize_playlist(body: bytes, token: str) -> bytes:
    """A playlist whose segment URIs carry the token (for players that keep no cookies)."""
    lines = body.decode().split("\n")
    tagged = (f"{line}?token={token}" if line and not line.startswith("#") else line for line in lines)
    return "\n".join(tagged).encode()
