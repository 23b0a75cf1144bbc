"""The listening socket, bound before anything slow happens: a taken port
is then reported at once rather than after seconds of loading. Light on
purpose (no web stack), since the command line binds before the model and
the server's modules load."""

from __future__ import annotations

import errno
import os
import socket
import sys

from chat.errors import LlamabinError, UsageError
from chat.server.settings import ServerSettings, is_loopback


def bind(host: str, port: int, flag: str = "--port") -> socket.socket:
    """A listening socket, or one clear line saying why there is none
    (naming `flag`, the option that chose the port)."""
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[
            0
        ]
    except socket.gaierror as exc:
        raise UsageError(f"cannot listen on host {host!r}: {exc.strerror}") from None
    sock = socket.socket(family, kind, proto)
    try:
        if os.name != "nt":  # on Windows this flag would let two servers share a port
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            hint = " (--port 0 picks a free one)" if flag == "--port" else ""
            raise LlamabinError(f"port {port} on {host} is already in use: pick another with {flag}{hint}") from None
        raise LlamabinError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    return sock


def warn_if_exposed(settings: ServerSettings) -> None:
    if not is_loopback(settings.host) and not settings.api_key:
        print(
            f"llamabin: warning: listening on {settings.host} without an API key: anyone who can reach"
            " this machine can use the model (set --api-key)",
            file=sys.stderr,
        )


class Listeners:
    """The server's bound sockets, the main port's first (and --ollama-port's,
    if given); closed together when the `with` block ends."""

    def __init__(self, sockets: list[socket.socket]) -> None:
        self.sockets = sockets

    def __enter__(self) -> Listeners:
        return self

    def __exit__(self, *_exc: object) -> None:
        for sock in self.sockets:
            sock.close()


def listen(settings: ServerSettings) -> Listeners:
    """`--server`'s sockets: without any of them there is nothing to do."""
    main = bind(settings.host, settings.port)
    try:
        extra = [bind(settings.host, settings.ollama_port, "--ollama-port")] if settings.ollama_port is not None else []
    except LlamabinError:
        main.close()
        raise
    warn_if_exposed(settings)
    return Listeners([main, *extra])


def listen_beside_chat(settings: ServerSettings) -> Listeners | None:
    """The default mode's sockets, or None when the port cannot be had: the
    chat then runs alone (a second chat in another terminal is normal, and
    must not fail for want of a port). A taken --ollama-port is left out."""
    try:
        main = bind(settings.host, settings.port)
    except LlamabinError as exc:
        print(f"llamabin: {exc}; the chat runs without the server", file=sys.stderr)
        return None
    extra = []
    if settings.ollama_port is not None:
        try:
            extra.append(bind(settings.host, settings.ollama_port, "--ollama-port"))
        except LlamabinError as exc:
            print(f"llamabin: {exc}; the server listens on port {settings.port} only", file=sys.stderr)
    warn_if_exposed(settings)
    return Listeners([main, *extra])
