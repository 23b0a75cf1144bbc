"""The web chat page and its files, served from inside the package (and so
from inside the packaged executable): no CDN, it works offline."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

# The page runs only its own files; model output, rendered as Markdown,
# can neither run script nor load anything from elsewhere.
PAGE_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)

router = APIRouter(include_in_schema=False)


def static_files() -> StaticFiles:
    """The app mounts this at /static (a router cannot carry a mount)."""
    return StaticFiles(directory=STATIC_DIR)


@router.get("/")
async def page() -> Response:
    headers = {"Content-Security-Policy": PAGE_POLICY, "Cache-Control": "no-cache"}
    return FileResponse(STATIC_DIR / "index.html", headers=headers)


@router.get("/favicon.ico")
async def favicon() -> Response:
    return Response(status_code=204)  # none: spares the log a 404 per page load
