"""What the server needs besides the engine: where to listen, who may call
it, and the defaults that a request's omitted fields take."""

from __future__ import annotations

from dataclasses import dataclass, field

from chat.engine.types import SamplingParams

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
OLLAMA_PORT = 11434  # where Ollama's clients look when they cannot be told
# A prompt that fits any context we can allocate is far smaller than this;
# a bigger body is a mistake or an attack, refused before it is parsed.
MAX_BODY_BYTES = 4 * 1024 * 1024
# Server generations waiting for the engine at most; more are refused with
# 503 (and Retry-After) rather than piling up threads and memory.
MAX_QUEUE = 32
# Connections held at once (each costs a file descriptor and a little
# memory); beyond it a new one gets 503 at once. Far above what a person's
# clients open, and below the usual 1024 descriptors a process may have.
DEFAULT_MAX_CONNECTIONS = 512
# From a request's first byte to its last: a client that takes longer gets
# 408, so half-sent requests cannot hold connections forever.
DEFAULT_REQUEST_TIMEOUT = 30.0


@dataclass(frozen=True)
class ServerSettings:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT  # 0: any free port, printed at start
    # A second port serving the same API, for clients fixed on Ollama's 11434.
    ollama_port: int | None = None
    api_key: str | None = None  # when set, API calls need "Authorization: Bearer KEY"
    allowed_hosts: tuple[str, ...] = ()  # Host/Origin names accepted besides the defaults
    cors_origins: tuple[str, ...] = ()  # browser origins allowed to call the API (CORS)
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT
    open_browser: bool = True
    model_id: str | None = None  # the name /v1/models lists; None: derived from the model
    sampling: SamplingParams = field(default_factory=SamplingParams)  # for omitted request fields
    max_tokens: int | None = None  # for requests that give none; None: until the answer ends
    max_body_bytes: int = MAX_BODY_BYTES
    max_queue: int = MAX_QUEUE
    verbose: bool = False  # access log and uvicorn's own messages

    @property
    def url(self) -> str:
        """Where a local browser or client reaches the server."""
        return base_url(self.host, self.port)


def base_url(host: str, port: int) -> str:
    # A wildcard address is where the server listens, not where to connect.
    shown = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    if ":" in shown:
        shown = f"[{shown}]"
    return f"http://{shown}:{port}"


def is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")
