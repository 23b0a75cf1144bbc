"""Calls the model chooses to make ("auto"), read back from its answer:
the server in-process over a fake engine that answers with a call in a
given syntax, called by the official `openai` and `ollama` clients. The
real model's required calls are in tests/test_server_tools.py."""

from __future__ import annotations

import json
from collections.abc import Iterator

import ollama
import openai
import pytest
from starlette.testclient import TestClient

from tests.fakeengine import FakeEngine
from tests.test_http_inprocess import URL, make_client

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
ASK = [{"role": "user", "content": "Weather in Paris?"}]
# A Hermes-style answer, in pieces that cut the tag and the JSON apart, as tokens would.
HERMES = (
    "Let me check",
    " that.",
    " <tool",
    "_call>\n",
    '{"name": "get_weather", ',
    '"arguments": {"city": "Paris"}}',
    "\n</tool_call>",
)


@pytest.fixture
def http() -> Iterator[TestClient]:
    with make_client(FakeEngine(n_ctx=4096, reply=HERMES)) as c:
        yield c


@pytest.fixture
def client(http: TestClient) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{URL}/v1", api_key="unused", http_client=http, max_retries=0)


def test_an_auto_call_is_read_from_the_answer(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model="m", messages=ASK, tools=[WEATHER])  # type: ignore[arg-type, list-item]
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Let me check that."
    (call,) = choice.message.tool_calls or []
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}  # type: ignore[union-attr]


def test_a_streamed_auto_call_streams_the_text_then_the_call(client: openai.OpenAI) -> None:
    with client.chat.completions.stream(model="m", messages=ASK, tools=[WEATHER]) as stream:  # type: ignore[arg-type, list-item]
        events = list(stream)
        final = stream.get_final_completion()
    text = "".join(e.delta for e in events if e.type == "content.delta")
    assert text == "Let me check that."
    assert "<tool" not in text  # the call's tag never reached the client as text
    (call,) = final.choices[0].message.tool_calls or []
    assert (call.function.name, json.loads(call.function.arguments)) == ("get_weather", {"city": "Paris"})
    assert final.choices[0].finish_reason == "tool_calls"


def test_without_tools_the_same_answer_is_text(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model="m", messages=ASK)  # type: ignore[arg-type]
    assert reply.choices[0].message.content == "".join(HERMES) and not reply.choices[0].message.tool_calls
    none = client.chat.completions.create(model="m", messages=ASK, tools=[WEATHER], tool_choice="none")  # type: ignore[arg-type, list-item]
    assert none.choices[0].message.content == "".join(HERMES)


def test_a_call_to_a_tool_not_offered_stays_text(http: TestClient) -> None:
    other = {"type": "function", "function": {"name": "get_time"}}
    body = http.post("/v1/chat/completions", json={"messages": ASK, "tools": [other]}).json()
    assert body["choices"][0]["message"]["content"] == "".join(HERMES)
    assert body["choices"][0]["finish_reason"] == "stop" and "tool_calls" not in body["choices"][0]["message"]


def test_ollama_chat_reads_the_call_streamed_or_not(http: TestClient) -> None:
    client = ollama.Client(host=URL)
    client._client = http  # the app in-process: the same requests, no socket
    whole = client.chat("fake-model.gguf", messages=ASK, tools=[WEATHER], stream=False)
    (call,) = whole.message.tool_calls or []
    assert (call.function.name, dict(call.function.arguments)) == ("get_weather", {"city": "Paris"})
    assert whole.message.content == "Let me check that."
    parts = list(client.chat("fake-model.gguf", messages=ASK, tools=[WEATHER], stream=True))
    assert "".join(p.message.content or "" for p in parts) == "Let me check that."
    calls = [c for p in parts for c in p.message.tool_calls or []]
    assert [(c.function.name, dict(c.function.arguments)) for c in calls] == [("get_weather", {"city": "Paris"})]
    assert parts[-1].done
