"""While the model loads, the port answers: /health says "loading" (503)
and the API says so too, so a balancer or a probe can tell loading from
down; once loaded, everything answers as usual."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from chat.server.loading import LOADING_MESSAGE, LoadingGate
from tests.slowload import SlowLoad

ROOT = Path(__file__).resolve().parent.parent


# -- the gate alone, in-process ------------------------------------------------


async def _ok(scope: dict, receive: object, send: object) -> None:  # type: ignore[type-arg]
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})  # type: ignore[operator]
    await send({"type": "http.response.body", "body": b"the app"})  # type: ignore[operator]


def test_the_gate_answers_503_in_each_api_shape_until_it_opens() -> None:
    asyncio.run(_gate_checks())


async def _gate_checks() -> None:
    gate = LoadingGate()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=gate), base_url="http://t") as client:
        health = await client.get("/health")
        assert health.status_code == 503
        assert health.json() == {"status": "loading"}
        assert health.headers["retry-after"] == "1"
        openai = await client.post("/v1/chat/completions", json={"messages": []})
        assert openai.status_code == 503
        assert openai.json()["error"]["code"] == "loading"
        assert openai.json()["error"]["message"] == LOADING_MESSAGE
        ollama = await client.post("/api/chat", json={})
        assert ollama.status_code == 503
        assert ollama.json() == {"error": LOADING_MESSAGE}
        gate.open(_ok)
        opened = await client.get("/health")
        assert (opened.status_code, opened.text) == (200, "the app")


# -- the real server, its load held back ---------------------------------------


@pytest.fixture
def slow(tmp_path: Path, smollm2: Path) -> Iterator[SlowLoad]:
    server = SlowLoad(tmp_path, smollm2)
    yield server
    server.stop()


def test_health_says_loading_until_the_model_is_loaded_then_ok(slow: SlowLoad) -> None:
    first = slow.first_answer()
    assert first.status_code == 503
    assert first.json() == {"status": "loading"}
    time.sleep(0.5)  # still held back: still loading, and the API says so too
    again = httpx.get(f"{slow.url}/health", timeout=5)
    assert (again.status_code, again.json()) == (503, {"status": "loading"})
    chat = httpx.post(
        f"{slow.url}/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]}, timeout=5
    )
    assert chat.status_code == 503
    assert chat.json()["error"]["code"] == "loading"

    slow.release()
    deadline = time.monotonic() + 60
    while (health := httpx.get(f"{slow.url}/health", timeout=5)).status_code == 503:
        assert health.json() == {"status": "loading"}
        assert time.monotonic() < deadline, "still loading after 60 s"
        time.sleep(0.05)
    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    answer = httpx.post(
        f"{slow.url}/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 4, "temperature": 0},
        timeout=60,
    )
    assert answer.status_code == 200
    assert answer.json()["choices"][0]["message"]["content"]
    assert f"listening on {slow.url}" in slow.stop()


def test_a_load_that_fails_after_the_port_answered_exits_1_with_one_line(slow: SlowLoad) -> None:
    assert slow.first_answer().status_code == 503
    slow.release("fail")
    assert slow.proc.wait(timeout=30) == 1
    stderr = slow.stop()
    assert "injected failure" in stderr
    assert "Traceback" not in stderr
    assert "listening on" not in stderr
    with pytest.raises(httpx.TransportError):  # the port is closed
        httpx.get(f"{slow.url}/health", timeout=2)
