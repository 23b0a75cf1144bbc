"""What every endpoint shares, kept on `app.state` (never in module globals,
so two apps in one process, as the tests make, stay apart)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from starlette.requests import Request

from chat.engine import Engine
from chat.server.generations import Generations
from chat.server.guards import RequestCounts
from chat.server.settings import ServerSettings
from templates import ChatTemplate


@dataclass
class ServerState:
    engine: Engine
    template: ChatTemplate
    settings: ServerSettings
    model_id: str
    generations: Generations
    counts: RequestCounts
    started: int = field(default_factory=lambda: int(time.time()))


def state_of(request: Request) -> ServerState:
    state: ServerState = request.app.state.llamabin
    return state
