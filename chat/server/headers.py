"""Security headers on every response: the page, its files, the API's JSON,
errors and 404s alike.

One middleware rather than headers set per route, so that no route (a
static file, a refusal from a guard, Starlette's own 404) can be served
without them.
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chat.server.errors import to_api_error

# The page runs only its own files; model output, rendered as Markdown,
# can neither run script, load anything from elsewhere, submit a form to
# anywhere, nor be framed by another site. On the API's JSON it is inert,
# and it keeps a response opened in a tab from doing anything either.
PAGE_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)

SECURITY_HEADERS = {
    "Content-Security-Policy": PAGE_POLICY,
    # A browser must not guess that a reply echoed in JSON, or a file, is HTML.
    "X-Content-Type-Options": "nosniff",
    # Links in replies lead elsewhere; they are not told the page's address.
    "Referrer-Policy": "no-referrer",
}


class SecurityHeaders:
    """Add SECURITY_HEADERS to every HTTP response. Only the response's
    start is touched, so streamed bodies pass through as they come."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message.setdefault("headers", [])  # optional in ASGI
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers[name] = value
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception as exc:
            # Starlette answers an unexpected exception outside every
            # middleware, where these headers would be missing: answer it
            # here instead, then let it rise to be logged.
            if not started:
                await to_api_error(exc).response(scope["path"])(scope, receive, send_with_headers)
            raise
