"""The Starlette application: routes, error mapping and guards around one
shared engine."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import BaseRoute, Mount, Route

from chat import __version__
from chat.engine import Engine
from chat.server import errors
from chat.server.generations import Generations
from chat.server.guards import CheckBody, CountRequests, RequestCounts, RequireApiKey
from chat.server.headers import SecurityHeaders
from chat.server.hosts import CheckHost, HostPolicy
from chat.server.openapi import Description
from chat.server.routes import native, ollama, openai, web
from chat.server.settings import ServerSettings
from chat.server.state import ServerState
from templates import ChatTemplate

TITLE = "llamabin"
DESCRIPTION = "An OpenAI-compatible API and llama.cpp's native endpoints for one local model."


def create_app(engine: Engine, template: ChatTemplate, settings: ServerSettings) -> Starlette:
    """An app serving `engine`; it does not own it (the caller closes it)."""
    endpoints = [e for router in (openai.router, ollama.router, native.router, web.router) for e in router.endpoints]
    routes: list[BaseRoute] = [e.route() for e in endpoints]
    routes += [
        Route("/openapi.json", Description(endpoints, TITLE, __version__, DESCRIPTION).serve, methods=["GET"]),
        Mount("/static", web.static_files(), name="static"),
    ]
    app = Starlette(routes=routes)
    counts = RequestCounts({r.path for r in routes if isinstance(r, Route)})
    app.state.llamabin = ServerState(
        engine=engine,
        template=template,
        settings=settings,
        model_id=settings.model_id or model_id(engine),
        generations=Generations(engine, settings.max_queue),
        counts=counts,
    )
    errors.install(app)
    # Added innermost first: a request meets SecurityHeaders (so even a
    # guard's refusal carries them), CountRequests, the Host and Origin check,
    # CORS (whose preflights carry no key), the key, then the body check.
    # None may change a response's body: streams write theirs past them
    # (chat.server.connections.BodyWriter).
    app.add_middleware(CheckBody, limit=settings.max_body_bytes)
    app.add_middleware(RequireApiKey, api_key=settings.api_key)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["*"],
            allow_headers=["*"],
            max_age=600,
        )
    app.add_middleware(CheckHost, policy=HostPolicy(settings.host, settings.allowed_hosts, settings.cors_origins))
    app.add_middleware(CountRequests, counts=counts)
    app.add_middleware(SecurityHeaders)
    return app


def model_id(engine: Engine) -> str:
    """The model's name as clients see it."""
    return engine.info.model_name
