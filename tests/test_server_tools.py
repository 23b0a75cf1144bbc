"""OpenAI tool calls on the real server with the real SmolLM2 model, through
the official `openai` client (and Ollama's through the `ollama` client):
required and named calls, streamed calls, and a tool's result sent back.

SmolLM2-135M rarely calls a tool on its own, so calls the model chooses
to make ("auto") are read back in tests/test_tools_inprocess.py, over an
engine that answers with the call; here every call is constrained."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import jsonschema_rs
import ollama
import openai
import pytest
from openai.types.chat import ChatCompletion

from tests.serverproc import ROOT, ServerProcess

WEATHER_SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "description": "The city's name"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
}
WEATHER = {
    "type": "function",
    "function": {"name": "get_weather", "description": "The current weather in a city", "parameters": WEATHER_SCHEMA},
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "The current time in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
ASK = [{"role": "user", "content": "What is the weather like in Paris today?"}]
GREEDY: dict[str, Any] = {"temperature": 0, "seed": 1, "max_tokens": 80}


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def required(client: openai.OpenAI) -> ChatCompletion:
    """The answer to ASK when a call is required."""
    return client.chat.completions.create(
        model="any", messages=ASK, tools=[WEATHER, TIME], tool_choice="required", **GREEDY
    )


def test_a_required_call_parses_and_follows_the_schema(required: ChatCompletion) -> None:
    choice = required.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls or []
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name in ("get_weather", "get_time")
    arguments = json.loads(call.function.arguments)
    schema = WEATHER_SCHEMA if call.function.name == "get_weather" else TIME["function"]["parameters"]
    jsonschema_rs.validate(schema, arguments)  # the enum included


def test_a_named_call_calls_that_tool(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="any",
        messages=ASK,
        tools=[WEATHER, TIME],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        **GREEDY,
    )
    (call,) = reply.choices[0].message.tool_calls
    assert call.function.name == "get_weather"
    arguments = json.loads(call.function.arguments)
    jsonschema_rs.validate(WEATHER_SCHEMA, arguments)
    assert arguments["unit"] in ("celsius", "fahrenheit")


def test_the_stream_helper_assembles_the_same_call(client: openai.OpenAI, required: ChatCompletion) -> None:
    with client.chat.completions.stream(
        model="any", messages=ASK, tools=[WEATHER, TIME], tool_choice="required", **GREEDY
    ) as stream:
        done = [e for e in stream if e.type == "tool_calls.function.arguments.done"]
        final = stream.get_final_completion()
    (streamed,) = final.choices[0].message.tool_calls or []
    (whole,) = required.choices[0].message.tool_calls or []
    assert final.choices[0].finish_reason == "tool_calls"
    assert (streamed.function.name, streamed.function.arguments) == (whole.function.name, whole.function.arguments)
    assert [e.name for e in done] == [whole.function.name]


def test_a_tool_result_sent_back_gets_an_answer(client: openai.OpenAI, required: ChatCompletion) -> None:
    asked = required.choices[0].message
    (call,) = asked.tool_calls or []
    result = {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature": 18, "sky": "clear"})}
    messages = [*ASK, asked.model_dump(exclude_none=True), result]
    reply = client.chat.completions.create(model="any", messages=messages, tools=[WEATHER, TIME], **GREEDY)
    choice = reply.choices[0]
    assert choice.finish_reason in ("stop", "length")
    assert choice.message.content and choice.message.content.strip()
    assert not choice.message.tool_calls
    # With no tools offered, the same history is still a conversation the model can answer.
    plain = client.chat.completions.create(model="any", messages=messages, **GREEDY)
    assert plain.choices[0].message.content


def test_tool_choice_none_never_calls(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model="any", messages=ASK, tools=[WEATHER], tool_choice="none", **GREEDY)
    assert reply.choices[0].message.tool_calls is None and reply.choices[0].message.content


@pytest.mark.parametrize(
    ("fields", "param", "words"),
    [
        (
            {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "get_news"}}},
            "tool_choice",
            "no tool named 'get_news'",
        ),
        ({"tool_choice": "required"}, "tool_choice", "needs tools"),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}]},
            "tools[0].function.parameters",
            "must be an object's",
        ),
        (
            {
                "tools": [
                    {
                        "type": "function",
                        "function": {
                            "name": "f",
                            "parameters": {"type": "object", "properties": {"x": {"$ref": "#/missing"}}},
                        },
                    }
                ]
            },
            "tools[0].function.parameters",
            "unsupported JSON schema",
        ),
        (
            {"tools": [{"type": "function", "function": {"name": "has space"}}]},
            "tools[0].function.name",
            "should match pattern",
        ),
        ({"tools": [WEATHER, WEATHER]}, "tools[1].function.name", "given twice"),
        (
            {"tools": [WEATHER], "tool_choice": "required", "response_format": {"type": "json_object"}},
            "response_format",
            "cannot be used with a required tool call",
        ),
    ],
)
def test_bad_tools_get_a_400_naming_them(server: ServerProcess, fields: dict[str, Any], param: str, words: str) -> None:
    response = httpx.post(f"{server.url}/v1/chat/completions", json={"messages": ASK, **fields}, timeout=60)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and words in error["message"], error


@pytest.mark.parametrize(
    ("message", "words"),
    [
        ({"role": "tool", "content": "18 degrees"}, "needs the tool_call_id"),
        (
            {
                "role": "user",
                "content": "hi",
                "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
            },
            "only assistant messages carry tool_calls",
        ),
        (
            {
                "role": "assistant",
                "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{oops"}}],
            },
            "not valid JSON",
        ),
    ],
)
def test_malformed_tool_messages_get_a_400(server: ServerProcess, message: dict[str, Any], words: str) -> None:
    response = httpx.post(f"{server.url}/v1/chat/completions", json={"messages": [*ASK, message]}, timeout=60)
    assert response.status_code == 400 and words in response.json()["error"]["message"], response.text


# -- Ollama's clients --------------------------------------------------------------------


def test_ollama_show_offers_tools_and_a_tool_result_round_trip_answers(server: ServerProcess) -> None:
    client = ollama.Client(host=server.url, timeout=120)
    name = "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert "tools" in (client.show(name).capabilities or [])
    messages = [
        *ASK,
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}}],
        },
        {"role": "tool", "content": '{"temperature": 18}', "tool_name": "get_weather"},
    ]
    reply = client.chat(
        name, messages=messages, tools=[WEATHER], options={"temperature": 0, "seed": 1, "num_predict": 40}
    )
    assert reply.message.content and reply.done


def test_ollama_port_serves_the_same_api_on_a_second_port(smollm2: Path, tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port free a moment ago
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = ServerProcess(smollm2, "--ollama-port", str(port), home=tmp_path)
    try:
        assert f"http://127.0.0.1:{port}" in proc.stderr and "for Ollama's clients" in proc.stderr
        (model,) = ollama.Client(host=f"http://127.0.0.1:{port}", timeout=60).list().models
        assert model.model == "SmolLM2-135M-Instruct.Q4_1.gguf:latest"
        assert httpx.get(f"{proc.url}/api/version", timeout=10).status_code == 200  # the main port too
    finally:
        proc.stop()


def test_a_taken_ollama_port_stops_the_server_with_one_line(smollm2: Path, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "chat",
                "-m",
                str(smollm2),
                "--server",
                "--nobrowser",
                "--port",
                "0",
                "--ollama-port",
                str(port),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            env={"PYTHONPATH": str(ROOT), "LLAMABIN_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
        )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"llamabin: error: port {port} on 127.0.0.1 is already in use: pick another with --ollama-port"
    ]
