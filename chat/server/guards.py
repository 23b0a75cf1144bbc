"""ASGI middleware that runs before any endpoint: request counting, the API
key, and the body's size and encoding.

They are plain ASGI (not code in the endpoints) so that they answer first:
an oversized or badly encoded body is refused before anything parses it,
and a caller without the key learns nothing else about the request.
"""

from __future__ import annotations

import hmac
from collections import Counter

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chat.server.errors import ApiError

# Reachable without the key: the page (which then asks for it), liveness
# checks, and the API description.
PUBLIC_PATHS = ("/", "/health", "/openapi.json", "/favicon.ico")
PUBLIC_PREFIXES = ("/static/",)


class RequestCounts:
    """HTTP requests answered, by path and status, for /metrics."""

    def __init__(self, known_paths: set[str]) -> None:
        self.known_paths = known_paths
        self.counts: Counter[tuple[str, int]] = Counter()

    def add(self, path: str, status: int) -> None:
        # Unknown paths share one label, so random URLs cannot grow the table.
        self.counts[(path if path in self.known_paths else "other", status)] += 1


class CountRequests:
    def __init__(self, app: ASGIApp, counts: RequestCounts) -> None:
        self.app = app
        self.counts = counts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.counts.add(scope["path"], int(message["status"]))
            await send(message)

        await self.app(scope, receive, counting_send)


class RequireApiKey:
    """With a key set, every non-public path needs `Authorization: Bearer KEY`."""

    def __init__(self, app: ASGIApp, api_key: str | None) -> None:
        self.app = app
        self.expected = f"Bearer {api_key}".encode() if api_key else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.expected is None or scope["type"] != "http" or _is_public(scope["path"]):
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"authorization", b"")
        if hmac.compare_digest(given, self.expected):
            await self.app(scope, receive, send)
            return
        error = ApiError(401, "Incorrect or missing API key: send 'Authorization: Bearer KEY'", code="invalid_api_key")
        await error.response(scope["path"])(scope, receive, send)


def _is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


class CheckBody:
    """Read the whole body up front (at most `limit` bytes) and refuse one
    that is too large (413) or not UTF-8 (400), then replay it to the app.

    After the replay, `receive` goes back to the client's stream, so the
    app still hears a disconnect."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        body, error = await self._read(scope, receive)
        if error is not None:
            await error.response(scope["path"])(scope, receive, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _read(self, scope: Scope, receive: Receive) -> tuple[bytes, ApiError | None]:
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if declared.isdigit() and int(declared) > self.limit:
            return b"", self._too_large()
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return b"", ApiError(400, "The client closed the connection")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                return b"", self._too_large()
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as exc:
            reason = f"The body is not valid UTF-8 (bad byte at offset {exc.start})"
            return b"", ApiError(400, reason, code="invalid_encoding")
        return body, None

    def _too_large(self) -> ApiError:
        mib = self.limit / (1024 * 1024)
        return ApiError(413, f"The request body is larger than {mib:g} MiB", code="request_too_large")
