"""What keeps the labeling app safe to expose, as plain functions and one ASGI middleware:
security headers on every response, a bearer token, no state change from another site, bounded
JSON bodies, and image files read only where they were registered and only as raster images.
Nothing here imports FastAPI."""

from __future__ import annotations

import hmac
import json
import os
import stat
from urllib.parse import urlsplit

MAX_BODY_BYTES = 256 * 1024
ML_MAX_BODY_BYTES = 64 * 1024 * 1024  # /ml/: Label Studio posts whole tasks (inline images) to predict

# No inline script or style anywhere (the page and /docs load theirs from /static); images from
# the app itself, the blob: URLs the page makes of fetched images, and data: URLs (the icons in
# Swagger UI's stylesheet; an <img> never runs script).
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
]
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


class UnservableFile(Exception):
    """An item's file cannot be served; the message names no path."""


def read_registered_file(registered: str) -> bytes:
    """The bytes of the file registered at ``registered`` (an absolute, resolved path stored when
    the campaign was created), read only if that path still resolves to itself: a file or folder
    replaced by a symbolic link since is refused, the last component is opened with O_NOFOLLOW,
    and only a regular file is read."""
    if os.path.realpath(registered) != registered:
        raise UnservableFile("was replaced by a symbolic link after the campaign was created")
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(registered, flags)
    except FileNotFoundError:
        raise UnservableFile("is missing on the server") from None
    except OSError:  # ELOOP: a link appeared in between; EACCES and the like
        raise UnservableFile("cannot be opened on the server") from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise UnservableFile("is not a regular file")
        return f.read()


def bearer_ok(header: str | None, token: str) -> bool:
    """``Authorization: Bearer <token>`` exactly (the scheme name is case-insensitive, as HTTP
    says); compared in constant time."""
    scheme, _, given = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not given:
        return False
    # the header arrives as latin-1 text: back to its bytes, against the token's UTF-8 bytes
    return hmac.compare_digest(given.encode("latin-1", "replace"), token.encode())


def basic_ok(header: str | None, token: str) -> bool:
    """``Authorization: Basic base64(USER:TOKEN)`` with the token as the password (any user
    name): what Label Studio's machine-learning backend settings can send (its "Basic
    Authentication"); compared in constant time."""
    import base64
    import binascii

    scheme, _, given = (header or "").partition(" ")
    if scheme.lower() != "basic" or not given:
        return False
    try:
        decoded = base64.b64decode(given.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    _, colon, password = decoded.partition(b":")
    return bool(colon) and hmac.compare_digest(password, token.encode())


def same_origin(origin: str, host: str | None) -> bool:
    """Whether an ``Origin`` header names the host and port the request was sent to (``Host``).
    A ``Host`` without a port stands for the origin scheme's default port."""
    if not host:
        return False
    try:
        o, h = urlsplit(origin), urlsplit("//" + host)
        if o.scheme not in ("http", "https") or not o.hostname or not h.hostname:
            return False
        default = 443 if o.scheme == "https" else 80
        return o.hostname == h.hostname and (o.port or default) == (h.port or default)
    except ValueError:  # a malformed port
        return False


def cross_site_reason(headers: dict[str, str]) -> str | None:
    """Why a state-changing request comes from another site, or ``None``. Browsers send
    ``Sec-Fetch-Site`` and ``Origin``; clients that send neither (curl, scripts) are not browsers
    visiting another site, and pass. An opaque ``Origin: null`` (a sandboxed frame, or a browser
    that hides the origin under ``Referrer-Policy: no-referrer``) passes only when the browser
    also says the request is ``same-origin``."""
    site = headers.get("sec-fetch-site")
    if site in ("cross-site", "same-site"):
        return f"Sec-Fetch-Site is {site!r}"
    origin = headers.get("origin")
    if origin == "null":
        return None if site == "same-origin" else "Origin is 'null' and Sec-Fetch-Site does not say 'same-origin'"
    if origin is not None and not same_origin(origin, headers.get("host")):
        return f"Origin {origin!r} is not this server ({headers.get('host')!r})"
    return None


def host_name(host: str | None) -> str | None:
    try:
        return urlsplit("//" + (host or "")).hostname
    except ValueError:
        return None


def is_json(content_type: str | None) -> bool:
    media = (content_type or "").split(";")[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


class Guard:
    """ASGI middleware: the security headers on every response it passes (errors, static files,
    404s, /docs), and, for ``/api/``, the checks that run before any route: a body of at most
    :data:`MAX_BODY_BYTES` (413), the bearer token when one is set (401), and for every method but
    GET/HEAD/OPTIONS no other site (403) and a JSON body (415); ``/ml/`` (Label Studio's calls) the
    same, where the token may also come as the password of Basic authentication. With ``hosts``, a request whose
    ``Host`` names another host is refused first (400): a page on another name that rebinds its DNS
    to this machine stays another origin. Its refusals carry the app's one error shape
    ``{"error": "..."}``."""

    def __init__(self, app, token: str | None = None, hosts: frozenset[str] | None = None):
        self.app = app
        self.token = token
        self.hosts = hosts

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        # /ml/: Label Studio's machine-learning backend calls and its webhook (a token, as the
        # bearer or as the Basic password; no Origin header, which passes the cross-site check)
        ml = scope["path"].startswith("/ml/")
        api = scope["path"].startswith("/api/") or ml

        async def send_secured(message):
            if message["type"] == "http.response.start":
                extra = HEADERS + ([(b"cache-control", b"no-store")] if api else [])
                names = {k for k, _ in extra}
                message = dict(message, headers=[(k, v) for k, v in message.get("headers", [])
                                                 if k.lower() not in names] + extra)
            await send(message)

        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if self.hosts is not None and host_name(headers.get("host")) not in self.hosts:
            return await _refuse(send_secured, 400, f"this server answers to {', '.join(sorted(self.hosts))} "
                                                    f"but the request is for host {headers.get('host')!r}")
        if not api:
            return await self.app(scope, receive, send_secured)
        method = scope["method"]
        given = headers.get("authorization")
        authorized = not self.token or bearer_ok(given, self.token) or (ml and basic_ok(given, self.token))
        if ml and not authorized:  # its larger bodies are read only from who holds the token
            return await _refuse(send_secured, 401, "a valid token is required (header 'Authorization: Bearer TOKEN', "
                                                    "or Basic authentication with the token as password)",
                                 [(b"www-authenticate", b"Bearer")])  # no Basic challenge: browsers would keep it
        if method not in SAFE_METHODS:
            limit = ML_MAX_BODY_BYTES if ml else MAX_BODY_BYTES
            body = await _read_body(receive, limit)
            if body is None:
                return await _refuse(send_secured, 413, f"request body must be at most {limit} bytes "
                                                        f"but is {headers.get('content-length', 'longer')}")
            receive = _replay(body, receive)
        if not authorized:
            return await _refuse(send_secured, 401, "a valid token is required (header 'Authorization: Bearer TOKEN')",
                                 [(b"www-authenticate", b"Bearer")])
        if method not in SAFE_METHODS:
            reason = cross_site_reason(headers)
            if reason is not None:
                return await _refuse(send_secured, 403, f"refused a {method} from another site: {reason}")
            if not is_json(headers.get("content-type")):
                return await _refuse(send_secured, 415, "expected a JSON body (Content-Type: application/json) "
                                                        f"but got {headers.get('content-type', 'no Content-Type')!r}")
        return await self.app(scope, receive, send_secured)


async def _read_body(receive, limit: int) -> bytes | None:
    """The whole request body, or ``None`` once it exceeds ``limit`` bytes."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":  # the client went away
            return b"".join(chunks)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive):
    sent = False

    async def again():
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}
    return again


async def _refuse(send, status: int, message: str, headers=()) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})
