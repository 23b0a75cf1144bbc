"""Running the app: alone in the foreground (`--server`), or in a thread
beside the terminal chat (the default mode), sharing its engine. The
socket comes already bound (chat.server.listen).
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
import webbrowser
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from types import FrameType

import uvicorn
from uvicorn.config import LOGGING_CONFIG

from chat import ctrl_c, phases
from chat.engine import Engine
from chat.errors import EXIT_OK, LlamabinError
from chat.server.app import create_app
from chat.server.connections import ConnectionLimits, guarded_protocol
from chat.server.generations import Generations
from chat.server.listen import bind
from chat.server.loading import LoadingGate
from chat.server.settings import ServerSettings, base_url
from chat.server.warmup import warm_up
from chat.session import Session
from templates import ChatTemplate

STARTUP_TIMEOUT = 30.0  # seconds for the server thread to start listening


def serve(
    session: Callable[[], Session], settings: ServerSettings, socks: Sequence[socket.socket], announce: bool = True
) -> int:
    """`--server`: serve until Ctrl-C, which reaches the caller as
    KeyboardInterrupt once open requests have been cancelled. `socks`: the
    main port's first, then any other port serving the same API.

    The port answers while `session()` waits for the model (503, "loading"
    on /health: chat.server.loading); the API opens once it is loaded, and
    "listening on" is printed then. A failed load stops the server and is
    raised here."""
    gate = LoadingGate()
    server = _Server(_config(gate, settings, quiet=False), None)
    failed: list[BaseException] = []

    def open_when_loaded() -> None:
        try:
            loaded = session()
            app = create_app(loaded.engine, loaded.template, settings)
        except BaseException as exc:  # raised again on the main thread, below
            failed.append(exc)
            server.should_exit = True
            return
        server.generations = app.state.llamabin.generations
        gate.open(app)
        phases.mark(phases.SERVING)
        url = base_url(settings.host, socks[0].getsockname()[1])
        if announce:
            print(f"listening on {url}{_also(settings, socks)}", file=sys.stderr, flush=True)
        open_browser(url, settings.open_browser)
        try:
            warm_up(app.state.llamabin)
        except Exception:  # noqa: S110 (a request that fails the same way says why; this one has no one to tell)
            pass

    opener = threading.Thread(target=open_when_loaded, name="llamabin-open", daemon=True)
    opener.start()
    try:
        server.run(sockets=list(socks))
    finally:
        # A load cannot be stopped half-way: wait for it (and the app) so the
        # caller closes an engine nothing uses any more.
        opener.join()
        if server.generations is not None:
            server.generations.cancel_all()  # let the engine close without finishing them
    if failed:
        raise failed[0]
    return EXIT_OK


def _also(settings: ServerSettings, socks: Sequence[socket.socket]) -> str:
    urls = [base_url(settings.host, s.getsockname()[1]) for s in socks[1:]]
    return f" (and on {', '.join(urls)} for Ollama's clients)" if urls else ""


class BackgroundServer:
    """A server running in a thread; `stop()` (or leaving a `with` block)
    cancels its generations and waits for the thread to end."""

    def __init__(self, server: _Server, thread: threading.Thread, url: str) -> None:
        self._server = server
        self._thread = thread
        self.url = url

    def stop(self) -> None:
        if self._server.generations is not None:
            self._server.generations.cancel_all()
        self._server.should_exit = True
        self._thread.join(timeout=10)

    def __enter__(self) -> BackgroundServer:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def start_in_background(
    engine: Engine, template: ChatTemplate, settings: ServerSettings, socks: Sequence[socket.socket] = ()
) -> BackgroundServer:
    """Serve `engine` from a thread (binding now unless given bound
    sockets, the main one first); return once it accepts connections."""
    socks = list(socks) or [bind(settings.host, settings.port)]
    sock = socks[0]
    app = create_app(engine, template, settings)
    server = _Server(_config(app, settings, quiet=True), app.state.llamabin.generations)
    thread = threading.Thread(target=server.run, kwargs={"sockets": socks}, name="llamabin-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise LlamabinError("the server did not start")
        time.sleep(0.02)
    return BackgroundServer(server, thread, base_url(settings.host, sock.getsockname()[1]))


@contextmanager
def beside_the_chat(
    session: Session, settings: ServerSettings, socks: Sequence[socket.socket]
) -> Iterator[BackgroundServer]:
    """The default mode's server, on the chat's engine and template: it
    serves while the `with` block runs the chat, and stops with it."""
    with start_in_background(session.engine, session.template, settings, socks) as server:
        print(f"web chat and OpenAI API: {server.url}{_also(settings, socks)}", flush=True)
        open_browser(server.url, settings.open_browser)
        yield server


# -- pieces --------------------------------------------------------------------


class _Server(uvicorn.Server):
    """uvicorn, cancelling our generations as it shuts down: otherwise it
    would wait for every open stream to finish on its own."""

    def __init__(self, config: uvicorn.Config, generations: Generations | None) -> None:
        super().__init__(config)
        self.generations = generations  # None while the model loads
        # Its own: the press uvicorn takes is raised again once it has shut
        # down, and must then reach the caller as a new one.
        self._presses = ctrl_c.Presses()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self.generations is not None:
            self.generations.cancel_all()
        await super().shutdown(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # uvicorn takes a second SIGINT as "quit now"; a packaged file's
        # bootloader passes on each press, so only a new press counts.
        if sig == signal.SIGINT and not self._presses.new():
            return
        super().handle_exit(sig, frame)


def _config(app: object, settings: ServerSettings, quiet: bool) -> uvicorn.Config:
    # Beside the chat, the terminal belongs to the chat: uvicorn says nothing
    # unless asked to (--verbose). Protocol classes are given directly, not
    # by name, so a frozen executable needs no hidden imports.
    level = "info" if settings.verbose else ("critical" if quiet else "warning")
    log_config = LOGGING_CONFIG if settings.verbose else None
    return uvicorn.Config(
        app,  # type: ignore[arg-type]
        http=guarded_protocol(ConnectionLimits(settings.max_connections, settings.request_timeout)),
        ws="none",
        lifespan="off",
        loop="asyncio",
        interface="asgi3",
        log_config=log_config,
        log_level=level,
        access_log=settings.verbose,
        server_header=False,
        timeout_graceful_shutdown=3,
    )


def open_browser(url: str, enabled: bool) -> None:
    """Show the page in the user's browser, if there is one to show it in.
    On Linux without a display, `webbrowser` would pick a text browser and
    take over the terminal, so it is not asked at all."""
    if not enabled:
        return
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return
    threading.Thread(target=_open, args=(url,), name="llamabin-browser", daemon=True).start()


def _open(url: str) -> None:
    try:
        webbrowser.open(url)
    except Exception:  # no browser, or a broken one, is no reason to stop serving
        pass
