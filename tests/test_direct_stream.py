"""A stream's plain events written straight to the connection (BodyWriter,
and `Generations.chunks(direct=...)`): every event arrives, once, in order,
whoever writes it, and a client that stops reading for a while gets the
whole stream once it reads again."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from chat.engine import Chunk, Engine, FinishReason, Generation, GenerationRequest, Usage
from chat.server.connections import BodyWriter
from chat.server.generations import Generations
from chat.server.run import start_in_background
from chat.server.settings import ServerSettings
from templates import builtin
from tests.fakeengine import FakeEngine


class PacedEngine(FakeEngine):
    """Emits `count` pieces from its own thread, `gap` seconds apart, as
    the real engine does: so a consumer waits between them."""

    def __init__(self, count: int, gap: float, piece_size: int = 1) -> None:
        super().__init__(n_ctx=100_000)
        self.count = count
        self.gap = gap
        self.piece_size = piece_size

    def piece(self, i: int) -> str:
        return f"<{i}>".ljust(self.piece_size, "~")

    def submit(self, request: GenerationRequest) -> Generation:
        gen = Generation(request, [1])

        def emit() -> None:
            for i in range(self.count):
                time.sleep(self.gap)
                gen.emit(Chunk(self.piece(i), (i,)))
            gen.emit(Chunk("", finish_reason=FinishReason.STOP, usage=Usage(1, 0, self.count, 0.01, 0.01)))

        threading.Thread(target=emit, daemon=True).start()
        return gen


def test_chunks_reach_the_consumer_or_the_direct_writer_once_each_in_order() -> None:
    engine = PacedEngine(count=300, gap=0.0005)
    out: list[str] = []
    offered_final: list[Chunk] = []

    def direct(chunk: Chunk) -> bool:
        if chunk.finish_reason is not None:
            offered_final.append(chunk)
        if chunk.text.startswith("<") and int(chunk.text[1:-1]) % 7 == 3:
            return False  # the consumer's, as a slow client's would be
        out.append(chunk.text)
        return True

    async def main() -> list[str]:
        fake: Any = engine
        generations = Generations(fake, limit=4)
        gen = engine.submit(GenerationRequest(prompt="x"))
        consumed: list[str] = []
        async for chunk in generations.chunks(gen, direct=direct):
            # Now and then the write waits (a slow client): the chunk in
            # hand must go out before any that came meanwhile.
            await asyncio.sleep(0.002 if len(consumed) % 5 == 0 else 0)
            if chunk.text:
                out.append(chunk.text)
                consumed.append(chunk.text)
        return consumed

    consumed = asyncio.run(main())
    assert out == [engine.piece(i) for i in range(300)]
    assert not offered_final
    assert 0 < len(consumed) < 300  # both ways were taken


def _serve(engine: FakeEngine) -> Any:
    fake: Any = engine
    real: Engine = fake
    return start_in_background(real, builtin("chatml"), ServerSettings(host="127.0.0.1", port=0))


CHAT = ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "stream": True})


def _request(port: int, path: str = CHAT[0], body: dict[str, Any] = CHAT[1]) -> bytes:
    data = json.dumps(body).encode()
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
    ).encode() + data


def _body(raw: bytes) -> str:
    """A chunked 200 response's body."""
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head[:200]
    data, at = bytearray(), 0
    while True:  # undo the chunked framing
        line_end = rest.index(b"\r\n", at)
        size = int(rest[at:line_end], 16)
        if size == 0:
            break
        data += rest[line_end + 2 : line_end + 2 + size]
        at = line_end + 2 + size + 2
    return data.decode()


def _contents(raw: bytes) -> tuple[list[str], bool]:
    """The content deltas of a chat stream, and whether it ended with [DONE]."""
    contents, done = [], False
    for line in _body(raw).splitlines():
        if line == "data: [DONE]":
            done = True
        elif line.startswith("data: "):
            for choice in json.loads(line[6:])["choices"]:
                if choice["delta"].get("content"):
                    contents.append(choice["delta"]["content"])
    return contents, done


def _read_all(sock: socket.socket) -> bytes:
    raw = bytearray()
    while not raw.endswith(b"0\r\n\r\n"):
        part = sock.recv(65536)
        if not part:
            break
        raw += part
    return bytes(raw)


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[bool, bool]]:
    """Each BodyWriter.write: whether it wrote, and whether the connection
    was paused (its client slow) when asked."""
    seen: list[tuple[bool, bool]] = []
    write = BodyWriter.write

    def counted(self: BodyWriter, data: bytes) -> bool:
        paused = self._cycle.flow.write_paused
        wrote = write(self, data)
        seen.append((wrote, paused))
        return wrote

    monkeypatch.setattr(BodyWriter, "write", counted)
    return seen


def test_a_stream_through_the_real_server_has_every_event_in_order(writes: list[tuple[bool, bool]]) -> None:
    engine = PacedEngine(count=200, gap=0.001)
    with _serve(engine) as server:
        port = int(server.url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(_request(port))
            contents, done = _contents(_read_all(sock))
    assert contents == [engine.piece(i) for i in range(200)]
    assert done
    assert sum(wrote for wrote, _ in writes) > 100  # most went straight out


def test_a_client_that_stops_reading_a_while_gets_the_whole_stream(writes: list[tuple[bool, bool]]) -> None:
    # 5,000 events of about 2 kB: more than twice what Linux's socket
    # buffers hold at most (4 MiB), so the server's transport fills and
    # pauses while the client sleeps.
    engine = PacedEngine(count=5000, gap=0.0001, piece_size=2000)
    with _serve(engine) as server:
        port = int(server.url.rsplit(":", 1)[1])
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(60)
        with sock:
            sock.connect(("127.0.0.1", port))
            sock.sendall(_request(port))
            time.sleep(1.5)
            contents, done = _contents(_read_all(sock))
    assert contents == [engine.piece(i) for i in range(5000)]
    assert done
    assert any(wrote for wrote, _ in writes)
    assert (False, True) in writes and (True, True) not in writes  # none written past a full buffer


def _sse(text: str) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ") and line != "data: [DONE]"]


STREAMS: dict[str, tuple[str, dict[str, Any], Callable[[str], list[str]]]] = {
    "completions": (
        "/v1/completions",
        {"prompt": "hi", "stream": True},
        lambda text: [c["text"] for e in _sse(text) for c in e["choices"] if c["text"]],
    ),
    "native": (
        "/completion",
        {"prompt": "hi", "stream": True},
        lambda text: [e["content"] for e in _sse(text) if not e["stop"]],
    ),
    "ollama chat": (
        "/api/chat",
        {"model": "fake-model.gguf", "messages": [{"role": "user", "content": "hi"}]},
        lambda text: [o["message"]["content"] for o in map(json.loads, text.splitlines()) if not o["done"]],
    ),
    "ollama generate": (
        "/api/generate",
        {"model": "fake-model.gguf", "prompt": "hi"},
        lambda text: [o["response"] for o in map(json.loads, text.splitlines()) if not o["done"]],
    ),
}


@pytest.mark.parametrize("name", list(STREAMS))
def test_every_kind_of_stream_has_every_piece_in_order(name: str, writes: list[tuple[bool, bool]]) -> None:
    path, body, pieces = STREAMS[name]
    engine = PacedEngine(count=150, gap=0.001)
    with _serve(engine) as server:
        port = int(server.url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(_request(port, path, body))
            text = _body(_read_all(sock))
    assert pieces(text) == [engine.piece(i) for i in range(150)]
    assert sum(wrote for wrote, _ in writes) > 75
