"""`/openapi.json`: the API's description, made from the endpoint table
(chat.server.routing) with pydantic writing each model's JSON Schema.

It is made at its first request, not at start-up: only tools and curious
users read it, and writing the schemas would hold up every start.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import compile_path

from chat.server.errors import ollama_shaped
from chat.server.ollama_types import OllamaError
from chat.server.routing import Endpoint
from chat.server.types import ErrorResponse

OPENAPI_VERSION = "3.1.0"
REF = "#/components/schemas/{model}"


class Description:
    """The endpoint serving the description, made at its first request."""

    def __init__(self, endpoints: Iterable[Endpoint], title: str, version: str, description: str) -> None:
        self._endpoints = tuple(endpoints)
        self._info = (title, version, description)
        self._document: dict[str, Any] | None = None

    async def serve(self, request: Request) -> Response:
        if self._document is None:
            self._document = document(self._endpoints, *self._info)
        return JSONResponse(self._document)


def document(endpoints: Iterable[Endpoint], title: str, version: str, description: str) -> dict[str, Any]:
    described = [e for e in endpoints if e.described]
    wanted: set[tuple[type[BaseModel], JsonSchemaMode]] = {
        (ErrorResponse, "serialization"),
        (OllamaError, "serialization"),
    }
    for e in described:
        if e.body is not None:
            wanted.add((e.body, "validation"))
        if e.response is not None:
            wanted.add((e.response, "serialization"))
    refs, defs = models_json_schema(sorted(wanted, key=lambda m: (m[0].__name__, m[1])), ref_template=REF)
    paths: dict[str, dict[str, Any]] = {}
    for e in described:
        path = compile_path(e.path)[1]  # `{name:path}` as OpenAPI writes it: `{name}`
        paths.setdefault(path, {})[e.method.lower()] = _operation(e, path, refs)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": title, "version": version, "description": description},
        "paths": paths,
        "components": {"schemas": defs.get("$defs", {})},
    }


Refs = Mapping[tuple[Any, JsonSchemaMode], dict[str, Any]]  # (model, mode) -> {"$ref": ...}


def _operation(e: Endpoint, path: str, refs: Refs) -> dict[str, Any]:
    doc = inspect.getdoc(e.handler) or ""
    op: dict[str, Any] = {
        "summary": e.name.replace("_", " ").capitalize(),
        "operationId": f"{e.name}_{e.method.lower()}_{path.strip('/').replace('/', '_').replace('{', '').replace('}', '')}",
    }
    if e.tag:
        op["tags"] = [e.tag]
    if doc:
        op["description"] = doc
    names = list(compile_path(e.path)[2])
    if names:
        op["parameters"] = [{"name": n, "in": "path", "required": True, "schema": {"type": "string"}} for n in names]
    if e.body is not None:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": refs[(e.body, "validation")]}},
        }
    ok: dict[str, Any] = {"description": "Successful response"}
    content: dict[str, Any] = {}
    if e.response is not None:
        content[e.media_type] = {"schema": refs[(e.response, "serialization")]}
    elif e.media_type == "application/json":
        content[e.media_type] = {"schema": {"type": "object"}}
    else:
        content[e.media_type] = {"schema": {"type": "string"}}
    if e.streams:
        content[e.streams] = {"schema": {"type": "string"}}
        ok["description"] += f"; with stream, {_stream_kind(e.streams)}"
    ok["content"] = content
    shape = OllamaError if ollama_shaped(e.path) else ErrorResponse
    error = {"content": {"application/json": {"schema": refs[(shape, "serialization")]}}}
    op["responses"] = {
        "200": ok,
        "4XX": {"description": "The request was refused", **error},
        "5XX": {"description": "The server failed, or is busy or still loading (503)", **error},
    }
    return op


def _stream_kind(media_type: str) -> Literal["server-sent events", "one JSON object a line"]:
    return "server-sent events" if media_type == "text/event-stream" else "one JSON object a line"
