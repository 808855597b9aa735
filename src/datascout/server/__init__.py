"""The labeling web app (FastAPI + uvicorn) over a campaign directory.

Everything here imports without the ``server`` extra, so that ``datascout serve`` can check
everything (the extra, the token, the port) and say what is wrong in one line before it starts.
"""

from __future__ import annotations

import errno
import importlib
import ipaddress
import socket

from datascout.exceptions import MissingDependencyError, ValidationError

__all__ = ["TOKEN_ENV", "bind_socket", "check_bind", "create_app", "is_loopback", "require_extra", "serve"]

TOKEN_ENV = "DATASCOUT_TOKEN"
EXTRA_MODULES = ("fastapi", "uvicorn", "fastapi_offline")  # fastapi-offline ships Swagger UI's files


def require_extra() -> None:
    """Raise :class:`MissingDependencyError` naming the install command if the ``server`` extra is missing."""
    for name in EXTRA_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:
            raise MissingDependencyError(f"the web server needs the 'server' extra ({name} is not installed): "
                                         "pip install 'datascout[server]'") from None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse a non-loopback address without a token, and a token no header can carry or that
    is easy to guess (whitespace, under 16 characters)."""
    if token is not None and (token != token.strip() or len(token) < 16 or any(c.isspace() for c in token)):
        raise ValidationError(f"a token must be at least 16 characters without spaces but has {len(token)}"
                              f"{' and spaces' if any(c.isspace() for c in token) else ''}: "
                              "e.g. python -c 'import secrets; print(secrets.token_urlsafe(24))'")
    if not is_loopback(host) and not token:
        raise ValidationError(f"binding {host!r} (beyond localhost) needs a token: pass --token or set ${TOKEN_ENV}")


def hold_campaign(directory):
    """An exclusive, non-blocking lock on the campaign for one server process (``.serve.lock``
    in its folder, released when the process ends): two servers on one campaign would select
    rounds against each other. Returns the open file; a second server gets a one-line error."""
    import fcntl
    import os

    path = os.path.join(str(directory), ".serve.lock")
    fh = open(path, "a+")
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        who = fh.read().strip() or "another process"
        fh.close()
        raise ValidationError(f"the campaign in {str(directory)!r} is already being served (pid {who}): "
                              "one server per campaign") from None
    fh.seek(0)
    fh.truncate()
    fh.write(str(os.getpid()))
    fh.flush()
    return fh


def bind_socket(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port``, for the server to listen on: a port in use (or an address
    this machine does not have) is a one-line error now, not uvicorn's after start-up."""
    if not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValidationError(f"port must be an integer in 0..65535 but is {port!r}")
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                          flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        raise ValidationError(f"expected a host name or address to serve on but {host!r} does not resolve "
                              f"({exc.strerror})") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ValidationError(f"port {port} on {host} is already in use: stop what holds it "
                                  "or choose another with --port") from None
        raise ValidationError(f"cannot serve on {host}:{port}: {exc.strerror}") from None
    return sock


def create_app(directory, *, token: str | None = None, select_in: str = "process", hosts=None):
    """The FastAPI app of the campaign in ``directory`` (see :func:`datascout.server.app.create_app`)."""
    from datascout.server.app import create_app as make

    return make(directory, token=token, select_in=select_in, hosts=hosts)


def serve(directory, *, host: str = "127.0.0.1", port: int = 8000, token: str | None = None,
          log_level: str = "warning", sock: socket.socket | None = None) -> None:
    """Run the app with uvicorn until interrupted, on ``sock`` or on a socket bound to
    ``host:port``. Refuses a non-loopback host without a token."""
    require_extra()
    check_bind(host, token)
    sock = sock or bind_socket(host, port)
    import uvicorn

    # on loopback, only loopback names: a page whose name rebinds to 127.0.0.1 is not let in
    hosts = frozenset({"localhost", "127.0.0.1", "::1", host.strip("[]")}) if is_loopback(host) else None
    app = create_app(directory, token=token, hosts=hosts)
    uvicorn.Server(uvicorn.Config(app, log_level=log_level, access_log=False)).run(sockets=[sock])
