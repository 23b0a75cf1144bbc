"""The security headers on a response no route means to send: the 500 for
an unexpected exception, which Starlette answers outside every middleware.
No route of the real server fails this way on purpose, so a small app with
the server's error mapping and middleware stands in for it."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route
from starlette.testclient import TestClient

from chat.server import errors
from chat.server.headers import SecurityHeaders


def test_an_unexpected_failure_still_carries_the_headers() -> None:
    async def fails(request: Request) -> None:
        raise RuntimeError("a bug")

    app = Starlette(routes=[Route("/fails", fails)])
    errors.install(app)
    app.add_middleware(SecurityHeaders)
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/fails")
    assert response.status_code == 500
    assert response.json()["error"]["type"] == "server_error"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "form-action 'none'" in response.headers["content-security-policy"]
