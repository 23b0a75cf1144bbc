"""Connections: how many the server holds, and how long a client may take
to send its request.

uvicorn waits for a request's headers forever, and counts connections only
once a request has arrived, so a few hundred clients that send half a
header and stop hold the server indefinitely (slowloris). This protocol
gives each request a deadline from its first byte (or from the connection's
opening) to its last, answering 408 and closing when it passes, and refuses
connections beyond a limit at once with 503; what is not HTTP gets a 400.
These answers are written straight to the socket: the request may not even
have headers to route by.

Each request's scope also carries a BodyWriter (`body_writer(scope)`): a
stream's events written to the connection at once, from a callback on the
event loop, without waking the task that serves the request.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import h11
from starlette.types import Scope
from uvicorn.protocols.http.h11_impl import H11Protocol, RequestResponseCycle

_BODY_WRITER = "llamabin.body_writer"  # the scope's key for its request's BodyWriter


class BodyWriter:
    """Writes more of a started response's body straight to its
    connection, as uvicorn's `send` would (h11 frames it), but at once: for
    a stream's events, from a callback on the event loop. Each such event
    sent through ASGI wakes the request's task and goes through every
    middleware's `send`: on a 2-core Xeon, about half of the loop's CPU per
    streamed token (2026-12-07). It writes only when uvicorn's `send` would
    without waiting: else the caller sends through ASGI, which waits.

    What it writes passes no middleware: that is right as long as the app's
    middleware (chat.server.app) touches only a response's start."""

    def __init__(self, cycle: RequestResponseCycle) -> None:
        self._cycle = cycle

    def write(self, data: bytes) -> bool:
        """Write `data` now and return True, or return False having
        written nothing (the client is slow, or gone, or the response has
        not started, or is over)."""
        c = self._cycle
        if c.disconnected or not c.response_started or c.response_complete or c.flow.write_paused:
            return False
        if c.scope["method"] == "HEAD" or c.transport.is_closing() or c.conn.our_state is not h11.SEND_BODY:
            return False
        output = c.conn.send(h11.Data(data=data))
        if output:
            c.transport.write(output)
        return True


def body_writer(scope: Scope) -> BodyWriter | None:
    """The BodyWriter of the request `scope` belongs to, if its server gave one."""
    writer = scope.get(_BODY_WRITER)
    return writer if isinstance(writer, BodyWriter) else None


@dataclass(frozen=True)
class ConnectionLimits:
    max_connections: int
    request_timeout: float  # seconds from a request's first byte to its last


def _raw_error(status: int, reason: str, message: str, code: str) -> bytes:
    body = json.dumps(
        {
            "error": {
                "message": message,
                "type": "invalid_request_error" if status < 500 else "server_error",
                "param": None,
                "code": code,
            }
        }
    ).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode()
    return head + body


def guarded_protocol(limits: ConnectionLimits) -> type[H11Protocol]:
    """uvicorn's h11 protocol with `limits` applied (uvicorn takes a class)."""

    class GuardedH11Protocol(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > limits.max_connections:
                self._refuse(
                    _raw_error(
                        503,
                        "Service Unavailable",
                        f"The server is at its limit of {limits.max_connections} connections; try again later",
                        "too_many_connections",
                    )
                )
                return
            self._arm()

        def handle_events(self) -> None:
            super().handle_events()
            # The request's task is created, not started: it finds this in its scope.
            cycle = self.cycle
            if cycle is not None:
                scope: dict[str, Any] = cycle.scope  # type: ignore[assignment]
                if _BODY_WRITER not in scope:  # once per request, however often its body's data comes
                    scope[_BODY_WRITER] = BodyWriter(cycle)

        def data_received(self, data: bytes) -> None:
            if self._deadline is None and self.conn.their_state is h11.IDLE:
                self._arm()  # the next request on a kept-alive connection starts its own clock
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE and self.conn.their_state is not h11.SEND_BODY:
                self._disarm()  # all of it is here (or the connection is over)

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(limits.request_timeout, self._timed_out)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _timed_out(self) -> None:
            self._deadline = None
            if self.transport.is_closing():
                return
            if self.cycle is not None and self.cycle.response_started:
                self.transport.close()
                return
            self._refuse(
                _raw_error(
                    408,
                    "Request Timeout",
                    f"The request did not arrive within {limits.request_timeout:g} s",
                    "request_timeout",
                )
            )

        def send_400_response(self, msg: str) -> None:
            # uvicorn answers a request h11 cannot read in plain text (after
            # logging `msg`); every other refusal here is an OpenAI error.
            self._refuse(_raw_error(400, "Bad Request", "The request could not be read as HTTP/1.1", "invalid_http"))

        def _refuse(self, response: bytes) -> None:
            self._disarm()
            self.transport.write(response)
            self.transport.close()

    return GuardedH11Protocol
