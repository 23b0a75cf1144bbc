"""The one place where failures become OpenAI-shaped errors.

Every error the server sends, before or inside a stream, is
`{"error": {"message", "type", "param", "code"}}` with the status chosen
here. A client's mistake is a 4xx; a 5xx means a fault of the server's own.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from chat.errors import ContextLengthExceededError, EngineClosedError, LlamabinError, UsageError
from templates import TemplateError

INVALID_REQUEST = "invalid_request_error"
SERVER_ERROR = "server_error"


class ApiError(Exception):
    """An error with its HTTP status and OpenAI's four fields."""

    def __init__(
        self,
        status: int,
        message: str,
        type: str = INVALID_REQUEST,
        param: str | None = None,
        code: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.retry_after = retry_after  # seconds, for an overloaded server's 503

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def ollama_body(self) -> dict[str, str]:
        """The same error in Ollama's shape."""
        return {"error": self.message}

    def headers(self) -> dict[str, str] | None:
        headers = {"WWW-Authenticate": "Bearer"} if self.status == 401 else {}
        if self.retry_after is not None:
            headers["Retry-After"] = str(self.retry_after)
        return headers or None

    def response(self, path: str = "") -> JSONResponse:
        """The error as the API at `path` words it: Ollama's under /api/, OpenAI's elsewhere."""
        body = self.ollama_body() if ollama_shaped(path) else self.body()
        return JSONResponse(body, status_code=self.status, headers=self.headers())

    def sse(self) -> str:
        """The error as a server-sent event, for failures after a stream began."""
        return f"data: {json.dumps(self.body(), ensure_ascii=False)}\n\n"


def to_api_error(exc: BaseException) -> ApiError:
    """Map any exception to the error a client sees."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, ContextLengthExceededError):
        return ApiError(400, str(exc), code="context_length_exceeded")
    if isinstance(exc, (UsageError, TemplateError)):
        return ApiError(400, str(exc))
    if isinstance(exc, HTTPException):
        return _http_error(exc)
    if isinstance(exc, EngineClosedError):  # a request that came in as the server shut down
        return ApiError(503, "The server is stopping", type=SERVER_ERROR)
    if isinstance(exc, LlamabinError):
        return ApiError(500, str(exc), type=SERVER_ERROR)
    return ApiError(500, f"internal error: {exc!r}", type=SERVER_ERROR)


async def errors_in_stream(
    events: AsyncGenerator[str, None], done: str | None = None, encode: Callable[[ApiError], str] = ApiError.sse
) -> AsyncIterator[str]:
    """`events`, then `done` (if any) once they end. An exception raised
    while they are produced ends the stream with it as an error event
    (`encode`: a server-sent event, or Ollama's last NDJSON line) instead,
    and no `done`: the status line has gone, so the error travels in the
    stream."""
    async with contextlib.aclosing(events):
        try:
            async for event in events:
                yield event
        except Exception as exc:
            yield encode(to_api_error(exc))
            return
    if done is not None:
        yield done


def ollama_shaped(path: str) -> bool:
    """Ollama's clients read `{"error": "..."}` and nothing else."""
    return path.startswith("/api/")


def install(app: Starlette) -> None:
    """Route every exception a handler raises through `to_api_error`."""

    async def handle(request: Request, exc: Exception) -> Response:
        return to_api_error(exc).response(request.url.path)

    for cls in (ApiError, LlamabinError, TemplateError, HTTPException, Exception):
        app.add_exception_handler(cls, handle)


# -- Starlette's and pydantic's errors, reworded ------------------------------------


def _http_error(exc: HTTPException) -> ApiError:
    if exc.status_code == 404:
        return ApiError(404, "Unknown URL: see /openapi.json for the endpoints", code="not_found")
    if exc.status_code == 405:
        return ApiError(405, "Method not allowed for this URL", code="method_not_allowed")
    if exc.status_code >= 500:
        return ApiError(exc.status_code, str(exc.detail), type=SERVER_ERROR)
    return ApiError(exc.status_code, str(exc.detail))


def not_a_json_object() -> ApiError:
    return ApiError(
        400, "The request body must be a JSON object (sent as Content-Type: application/json)", code="invalid_type"
    )


def invalid_body(errors: Sequence[Any]) -> ApiError:
    """pydantic's list of what is wrong with a body as OpenAI words it: a
    400 naming the first bad parameter."""
    if not errors:
        return ApiError(400, "Invalid request body")
    first = errors[0]
    kind = first.get("type", "")
    loc = tuple(first.get("loc", ()))
    if not loc:  # the body as a whole: a list, a string, null
        return not_a_json_object()
    same_field = [e for e in errors if tuple(e.get("loc", ()))[:1] == loc[:1]]
    param = _format_loc(_common_prefix([tuple(e.get("loc", ())) for e in same_field]))
    if kind == "missing":
        return ApiError(400, f"Missing required parameter: '{param}'", param=param, code="missing_required_parameter")
    reasons = sorted({_reason(e) for e in same_field})
    # A union reports a type error per member; one value error among them is the real complaint.
    kinds = [str(e.get("type", "")) for e in same_field]
    code = "invalid_type" if all(k.endswith("_type") for k in kinds) else "invalid_value"
    return ApiError(400, f"Invalid value for '{param}': {'; or '.join(reasons)}", param=param, code=code)


def _common_prefix(locs: list[tuple[Any, ...]]) -> tuple[Any, ...]:
    prefix = locs[0]
    for loc in locs[1:]:
        n = 0
        while n < min(len(prefix), len(loc)) and prefix[n] == loc[n]:
            n += 1
        prefix = prefix[:n]
    return prefix


def _format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _is_union_tag(str(part)):
            break  # pydantic names the union member it tried; clients never wrote that
        else:
            out += f".{part}" if out else str(part)
    return out


def _is_union_tag(part: str) -> bool:
    return part in ("str", "int", "float", "bool") or any(c in part for c in "[]-")


def _reason(error: Any) -> str:
    msg = str(error.get("msg", "invalid"))
    return msg[0].lower() + msg[1:] if msg else "invalid"
