"""Endpoints declared once, in a table: Starlette serves them and
chat.server.openapi describes them from the same entries.

Each endpoint says its path, its method, the pydantic model its JSON body
must fit and the model it answers with. The body is read and checked here,
so every front door refuses a bad one in the same words (errors.py); the
handler gets the parsed model, the request and the server's shared state.

FastAPI does all this and more, but importing it and its OpenAPI models
took about a third of the server's start-up (bench/RESULTS.md); what the
server needs of it is this table.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.message import Message
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from chat.server.errors import ApiError, invalid_body, not_a_json_object
from chat.server.state import state_of

Handler = Callable[..., Awaitable[Any]]
H = TypeVar("H", bound=Handler)


@dataclass(frozen=True)
class Endpoint:
    """One method on one path. `body`: the model the JSON body is parsed
    into (the handler's first argument); `response`: what a 200 holds, for
    the description; `streams`: the media type it answers with instead
    when asked to stream; `media_type`: a 200's type, when not JSON;
    `any_content_type`: the body is read as JSON whatever its Content-Type
    says (Ollama's own examples post JSON with `curl -d`, a form's type)."""

    method: str
    path: str
    handler: Handler
    tag: str | None
    body: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    streams: str | None = None
    media_type: str = "application/json"
    described: bool = True
    any_content_type: bool = False

    @property
    def name(self) -> str:
        return self.handler.__name__

    def route(self) -> Route:
        return Route(self.path, self._serve, methods=[self.method], name=self.name)

    async def _serve(self, request: Request) -> Response:
        st = state_of(request)
        if self.body is not None:
            body = await read_body(request, self.body, self.any_content_type)
            result = await self.handler(body, request, st)
        else:
            result = await self.handler(request, st)
        return as_response(result)


class Router:
    """Endpoints under one prefix, declared with `@router.get(...)` and
    `@router.post(...)` on the handlers."""

    def __init__(
        self, prefix: str = "", tag: str | None = None, described: bool = True, any_content_type: bool = False
    ) -> None:
        self.prefix = prefix
        self.tag = tag
        self.described = described
        self.any_content_type = any_content_type
        self.endpoints: list[Endpoint] = []

    def get(
        self, path: str, response: type[BaseModel] | None = None, media_type: str = "application/json"
    ) -> Callable[[H], H]:
        return self._add("GET", path, response=response, media_type=media_type)

    def post(
        self,
        path: str,
        body: type[BaseModel] | None = None,
        response: type[BaseModel] | None = None,
        streams: str | None = None,
    ) -> Callable[[H], H]:
        return self._add("POST", path, body=body, response=response, streams=streams)

    def _add(self, method: str, path: str, **details: Any) -> Callable[[H], H]:
        def register(handler: H) -> H:
            self.endpoints.append(
                Endpoint(
                    method,
                    self.prefix + path,
                    handler,
                    self.tag,
                    described=self.described,
                    any_content_type=self.any_content_type,
                    **details,
                )
            )
            return handler

        return register


# -- bodies in, answers out ------------------------------------------------------------

M = TypeVar("M", bound=BaseModel)

EMPTY_BODY = "The request body is empty: send a JSON object"


async def read_body(request: Request, model: type[M], any_content_type: bool = False) -> M:
    """The body as `model`, or the ApiError that says what is wrong with
    it. (Its size and UTF-8 were checked before: guards.CheckBody.)"""
    raw = await request.body()
    if not raw.strip():
        raise ApiError(400, EMPTY_BODY, code="invalid_json")
    if not any_content_type and not _is_json(request.headers.get("content-type")):
        raise not_a_json_object()
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ApiError(400, f"The body is not valid JSON ({exc.msg})", code="invalid_json") from None
    except ValueError as exc:  # Python's own limits: an integer of more than 4,300 digits
        raise ApiError(400, f"The body's JSON cannot be read: {exc}", code="invalid_json") from None
    except RecursionError:
        raise ApiError(400, "The body could not be parsed as JSON (nested too deeply?)", code="invalid_json") from None
    if _SURROGATE_ESCAPE.search(raw) and not _is_unicode(data):
        raise ApiError(
            400,
            "The body's JSON holds an unpaired UTF-16 surrogate (an escape from \\ud800 to \\udfff): text must be Unicode",
            code="invalid_encoding",
        )
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise invalid_body(exc.errors()) from None


# Raw UTF-8 cannot hold a surrogate (guards.CheckBody decodes it strictly),
# so only a \uD800-\uDFFF escape can put one in a string; one left unpaired
# is not text, and fails wherever the string is encoded again (tokenizing it,
# or quoting it in an error).
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _is_unicode(data: Any) -> bool:
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _is_json(content_type: str | None) -> bool:
    """A body without a Content-Type is read as JSON; one with another type
    (a form's, which `curl -d` sends unless told otherwise) is refused in
    words that name the header."""
    if not content_type:
        return True
    header = Message()
    header["content-type"] = content_type
    subtype = header.get_content_subtype()
    return header.get_content_maintype() == "application" and (subtype == "json" or subtype.endswith("+json"))


def as_response(result: Any) -> Response:
    if isinstance(result, Response):
        return result
    if isinstance(result, BaseModel):
        return Response(result.model_dump_json(), media_type="application/json")
    return JSONResponse(result)
