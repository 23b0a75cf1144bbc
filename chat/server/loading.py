"""The port while the model loads: it already answers, so balancers and
probes can tell a server that is loading from one that is down.

`/health` says `{"status": "loading"}` with a 503, as llama-server does;
every other path gets a 503 with `Retry-After`, in OpenAI's error shape
(Ollama's under `/api/`).
Once the app is handed over, every request goes to it.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

RETRY_AFTER_S = 1
LOADING_MESSAGE = "the model is still loading: retry in a moment"


class LoadingGate:
    """An ASGI app answering 503 until `open()` hands it the real app."""

    def __init__(self) -> None:
        self._app: ASGIApp | None = None

    def open(self, app: ASGIApp) -> None:
        # One reference assignment: a request sees either the gate or the app.
        self._app = app

    @property
    def is_open(self) -> bool:
        return self._app is not None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        app = self._app
        if app is not None:
            await app(scope, receive, send)
            return
        if scope["type"] != "http":  # the server runs without lifespan and websockets
            return
        await send(
            {
                "type": "http.response.start",
                "status": 503,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"retry-after", str(RETRY_AFTER_S).encode()),
                    (b"cache-control", b"no-store"),
                    (b"x-content-type-options", b"nosniff"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": json.dumps(loading_body(scope.get("path", ""))).encode()})


def loading_body(path: str) -> dict[str, Any]:
    if path == "/health":
        return {"status": "loading"}
    if path.startswith("/api/"):  # Ollama's clients read a bare message
        return {"error": LOADING_MESSAGE}
    return {"error": {"message": LOADING_MESSAGE, "type": "unavailable_error", "param": None, "code": "loading"}}
