"""Which Host and Origin headers the server answers: the defence against DNS
rebinding and against web pages driving a local model.

A page on evil.example can make the browser resolve its own name to
127.0.0.1 and then read this server's answers as its own origin (DNS
rebinding: the request arrives with `Host: evil.example:8080`). Such names
are refused; an IP address in Host cannot be rebound, so every IP literal is
fine, as are localhost, this machine's own name and names the user allows.

A page from another origin can also send simple requests (a form POST)
without asking CORS first. So a request that carries an `Origin` must come
from this very server (same host and port as its Host header), from an
allowed name, or from an origin given with --cors-origin.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from chat.server.errors import ApiError

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def _split_host(value: str) -> tuple[str, str] | None:
    """(host, port) of a Host header or netloc: '[::1]:8080' -> ('::1', '8080');
    None when it is not one (RFC 9110: host, then optionally ':' and digits)."""
    value = value.strip().lower()
    if value.startswith("["):
        host, closed, rest = value[1:].partition("]")
        if not closed or (rest and not rest.startswith(":")) or not _is_ip(host):
            return None
        port = rest.removeprefix(":")
    elif value.count(":") == 1:
        host, _, port = value.partition(":")
    else:
        host, port = value, ""  # a bare IPv6 address, or a name without a port
    if not host or (port and not (port.isascii() and port.isdigit() and int(port) <= 65535)):
        return None
    return host, port


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class HostPolicy:
    def __init__(self, bound_host: str, allowed: Iterable[str], cors_origins: Iterable[str]) -> None:
        names = {*LOOPBACK_NAMES, bound_host.lower().strip("[]"), *(a.lower().strip("[]") for a in allowed)}
        try:
            machine = socket.gethostname().lower()
            names |= {machine, f"{machine}.local"}
        except OSError:
            pass
        self.names = frozenset(n for n in names if n)
        self.cors_origins = frozenset(o.lower() for o in cors_origins)

    def host_ok(self, host: str) -> bool:
        split = _split_host(host)
        if split is None:
            return False
        name = split[0]
        return name in self.names or name.endswith(".localhost") or _is_ip(name)

    def origin_ok(self, origin: str, host: str) -> bool:
        origin = origin.strip().lower()
        if origin in self.cors_origins:
            return True
        try:
            parts = urlsplit(origin)
        except ValueError:  # "http://[::1": an unclosed IPv6 bracket
            return False
        if parts.scheme not in ("http", "https") or not parts.netloc:
            return False  # "null" (a sandboxed frame, a file:// page) and the like
        if parts.netloc == host.strip().lower():
            return True  # the page this server served
        split = _split_host(parts.netloc)
        return split is not None and split[0] in self.names


class CheckHost:
    """403, in the error shape of the API asked, for a Host or Origin the policy refuses."""

    def __init__(self, app: ASGIApp, policy: HostPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        host = headers.get(b"host", b"").decode("latin-1")
        origin = headers.get(b"origin")
        if host and _split_host(host) is None:
            error = ApiError(400, f"the Host header {host!r} is malformed", code="invalid_host")
        elif host and not self.policy.host_ok(host):
            error = ApiError(
                403,
                f"Host {host!r} is not served here: to reach this server under that name,"
                " start it with --allowed-host NAME",
                code="host_not_allowed",
            )
        elif origin is not None and not self.policy.origin_ok(origin.decode("latin-1"), host):
            error = ApiError(
                403,
                f"Requests from web pages at {origin.decode('latin-1')!r} are not allowed:"
                " start the server with --cors-origin ORIGIN to allow them",
                code="origin_not_allowed",
            )
        else:
            await self.app(scope, receive, send)
            return
        await error.response(scope["path"])(scope, receive, send)
