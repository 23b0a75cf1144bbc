"""Start-up: the engine loads in a thread while the front end imports."""

from __future__ import annotations

import dataclasses
import sys
import threading

from chat import ctrl_c, phases
from chat.engine import Engine, backends, openmp
from chat.engine.llama import LlamaLog
from chat.session import Session
from chat.settings import Settings

LOAD_SWITCH_INTERVAL = 0.0005  # seconds; Python's default is 0.005


def open_engine(settings: Settings, load_threads: int | None = None) -> Engine:
    """The engine the settings ask for; `load_threads`: OpenMP's default
    thread count while the model loads (EngineConfig.load_threads)."""
    phases.mark(phases.LOAD_BEGINS)
    if not settings.log_disable and settings.verbose:
        print(f"loading {settings.model.path}", file=sys.stderr)
    LlamaLog.install(settings.verbose)  # first: loading the kernels logs where they came from
    kernels = backends.load()  # the Engine would load them too; here its notes can be shown
    if not settings.log_disable:
        for note in kernels.notes:
            print(f"llamabin: {note}", file=sys.stderr)
    engine = Engine(dataclasses.replace(settings.engine_config(), load_threads=load_threads))
    phases.mark(phases.ENGINE_READY)
    return engine


class EngineLoad:
    """The engine, loading in a thread from the moment this is made.

    The front ends' own imports take a while (the server stack about 0.3 s,
    the terminal chat's about 0.15 s), and llama.cpp loads the model without
    holding the GIL, so the two overlap on any machine with a second core.
    Leaving the `with` block closes the engine, whoever used it.
    `imports_beside`: a front end imports while the model loads, so the
    load's own parallel loops leave it a core (chat.engine.openmp).
    """

    def __init__(self, settings: Settings, imports_beside: bool = False) -> None:
        self._settings = settings
        self._load_threads = max(1, openmp.cores() - 1) if imports_beside else None
        self._engine: Engine | None = None
        self._error: BaseException | None = None
        self._loaded = threading.Event()  # set when the load ends, whichever way
        self._thread = threading.Thread(target=self._load, name="llamabin-load", daemon=True)
        self._thread.start()

    def _load(self) -> None:
        # Each call into llama.cpp gives up the GIL, and getting it back from
        # the importing thread took up to a switch interval (5 ms) each time:
        # about 10 ms of every load. Shorter turns while the load runs (one
        # load per process: the command line makes one EngineLoad).
        switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(min(switch_interval, LOAD_SWITCH_INTERVAL))
        try:
            self._engine = open_engine(self._settings, self._load_threads)
        except BaseException as exc:  # handed to the thread that waits
            self._error = exc
        finally:
            sys.setswitchinterval(switch_interval)
            self._loaded.set()

    def engine(self) -> Engine:
        """The loaded engine, or the load's own error."""
        if self._wait():
            self.close()
            raise KeyboardInterrupt
        if self._error is not None:
            raise self._error
        assert self._engine is not None
        return self._engine

    def session(self) -> Session:
        """The loaded engine with the template the settings choose, resolved
        once for every front end."""
        engine = self.engine()
        return Session(engine, self._settings.template_choice().resolve(engine))

    def _wait(self) -> bool:
        """Wait for the load to end; True if Ctrl-C came meanwhile. llama.cpp
        cannot stop a load half-way, and exiting under it can crash the
        process, so Ctrl-C takes effect once the load is over (as it did
        when the load ran on the main thread)."""
        try:
            with ctrl_c.held():
                self._loaded.wait()
        except KeyboardInterrupt:
            return True
        return False

    def close(self) -> None:
        interrupted = self._wait()
        engine, self._engine = self._engine, None
        if engine is not None:
            engine.close()
        if interrupted:
            raise KeyboardInterrupt

    def __enter__(self) -> EngineLoad:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
