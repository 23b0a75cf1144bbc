"""The web chat page and its files, served from inside the package (and so
from inside the packaged executable): no CDN, it works offline."""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.staticfiles import StaticFiles

from chat.server.routing import Router
from chat.server.state import ServerState

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

router = Router(described=False)


def static_files() -> StaticFiles:
    """The app mounts this at /static (a router cannot carry a mount)."""
    return StaticFiles(directory=STATIC_DIR)


@router.get("/")
async def page(request: Request, st: ServerState) -> Response:
    # Its security headers, like every response's, come from
    # chat.server.headers, so /static/index.html carries them too.
    return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


@router.get("/favicon.ico")
async def favicon(request: Request, st: ServerState) -> Response:
    return Response(status_code=204)  # none: spares the log a 404 per page load
