"""The real server on loopback with the real SmolLM2 model, called by the
official `openai` client and by plain HTTP for what no client would send."""

from __future__ import annotations

import json
import math
import re
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from chat.server.listen import warn_if_exposed
from chat.server.settings import ServerSettings
from tests.serverproc import ROOT, ServerProcess

HELPFUL = {"role": "system", "content": "You are a helpful assistant."}
FRANCE = [HELPFUL, {"role": "user", "content": "What is the capital of France?"}]
LONG_STORY = [HELPFUL, {"role": "user", "content": "Write a very long story about a dragon."}]
# Greedy counting goes on far past any limit a test waits for: an answer
# that is certain to still be running when the test acts on it.
COUNTING = {"prompt": "1, 2, 3, 4, 5, 6,", "temperature": 0, "max_tokens": 3000, "stream": True}


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=120)


def post(server: ServerProcess, path: str, body: object, **kw: Any) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", json=body, timeout=120, **kw)


def sse_data(response: httpx.Response) -> list[str]:
    return [line[len("data: ") :] for line in response.iter_lines() if line.startswith("data: ")]


# -- the official client ---------------------------------------------------------


def test_chat_completion(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model="any-name-at-all", messages=FRANCE, temperature=0, max_tokens=24)
    choice = reply.choices[0]
    assert "Paris" in (choice.message.content or "")
    assert choice.message.role == "assistant"
    assert choice.finish_reason in ("stop", "length")
    assert reply.usage is not None and reply.usage.prompt_tokens > 10
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_streamed_text_equals_the_whole_answer(client: openai.OpenAI) -> None:
    args: dict[str, Any] = {"model": "m", "messages": LONG_STORY, "temperature": 0, "seed": 7, "max_tokens": 32}
    whole = client.chat.completions.create(**args).choices[0].message.content
    chunks = list(client.chat.completions.create(**args, stream=True, stream_options={"include_usage": True}))
    pieces = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert len([p for p in pieces if p]) > 5  # it did stream, piece by piece
    assert "".join(pieces) == whole
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 32
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"


def test_completion(client: openai.OpenAI) -> None:
    out = client.completions.create(model="m", prompt="The capital of France is", max_tokens=8, temperature=0)
    assert "Paris" in out.choices[0].text
    assert out.choices[0].finish_reason in ("stop", "length")


def test_a_repeat_window_of_minus_one_is_the_whole_context(server: ServerProcess) -> None:
    """As llama-server reads /completion's repeat_last_n -1 (llama.cpp's
    own sampler would take it as no window, the penalty off)."""
    prompt = "Once upon a time, a lighthouse keeper"
    post(server, "/completion", {"prompt": prompt, "n_predict": 1})  # each answer below then starts from the cache

    def answer(**fields: object) -> str:
        body = {"prompt": prompt, "n_predict": 40, "temperature": 0, "repeat_penalty": 1.5, **fields}
        r = post(server, "/completion", body)
        assert r.status_code == 200, r.text
        return str(r.json()["content"])

    whole = answer(repeat_last_n=-1)
    assert whole == answer(repeat_last_n=8192)
    assert whole != answer(repeat_last_n=0)


def test_model_list(client: openai.OpenAI, smollm2: Path) -> None:
    models = client.models.list().data
    assert [m.id for m in models] == [smollm2.name]


def test_embeddings(client: openai.OpenAI, server: ServerProcess) -> None:
    texts = ["The cat sat on the mat.", "A cat was sitting on a mat.", "Quarterly tax filing deadlines"]
    out = client.embeddings.create(model="m", input=texts)  # the client asks for base64
    vectors = [d.embedding for d in out.data]
    assert [d.index for d in out.data] == [0, 1, 2]
    assert len({len(v) for v in vectors}) == 1 and len(vectors[0]) > 100
    for v in vectors:
        assert math.isclose(sum(x * x for x in v), 1.0, rel_tol=1e-3)
    cos = [sum(a * b for a, b in zip(vectors[0], v, strict=False)) for v in vectors[1:]]
    assert cos[0] > cos[1]  # the paraphrase is nearer than the unrelated text
    floats = post(server, "/v1/embeddings", {"input": texts[0], "encoding_format": "float"}).json()
    assert all(
        math.isclose(a, b, abs_tol=1e-5) for a, b in zip(floats["data"][0]["embedding"], vectors[0], strict=False)
    )


def test_over_long_prompt_is_context_length_exceeded(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hello " * 6000}])
    assert caught.value.code == "context_length_exceeded"
    assert caught.value.status_code == 400


def test_json_schema_response_format(client: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 12}, "country": {"type": "string", "maxLength": 12}},
        "required": ["city", "country"],
        "additionalProperties": False,
    }
    reply = client.chat.completions.create(
        model="m",
        messages=FRANCE,
        temperature=0,
        max_tokens=60,
        response_format={"type": "json_schema", "json_schema": {"name": "place", "schema": schema}},
    )
    data = json.loads(reply.choices[0].message.content or "")
    assert set(data) == {"city", "country"}


def test_json_object_response_format(server: ServerProcess) -> None:
    body = {"messages": FRANCE, "temperature": 0, "max_tokens": 48, "response_format": {"type": "json_object"}}
    content = post(server, "/v1/chat/completions", body).json()["choices"][0]["message"]["content"]
    assert content.lstrip().startswith("{")  # the JSON grammar's root is an object


# -- streams ---------------------------------------------------------------------


def test_sse_stream_ends_with_done(server: ServerProcess) -> None:
    body = {"messages": FRANCE, "stream": True, "max_tokens": 6}
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body, timeout=120) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        data = sse_data(response)
    assert data[-1] == "[DONE]"
    first = json.loads(data[0])
    assert first["object"] == "chat.completion.chunk" and first["choices"][0]["delta"]["role"] == "assistant"
    assert json.loads(data[-2])["choices"][0]["finish_reason"] in ("stop", "length")


def test_client_disconnect_cancels_the_generation(server: ServerProcess) -> None:
    before = _metric(server, "llamabin_completion_tokens_total")
    with httpx.stream("POST", f"{server.url}/v1/completions", json=COUNTING, timeout=120) as response:
        for n, _line in enumerate(response.iter_lines()):
            if n > 8:
                break  # hang up mid-answer
    # Were it not cancelled, 3000 tokens would keep the engine busy for minutes.
    server.wait_idle(timeout=15)
    assert _metric(server, "llamabin_completion_tokens_total") - before < 3000
    assert post(server, "/v1/completions", {"prompt": "One, two,", "max_tokens": 2}).status_code == 200


def test_a_burst_beyond_the_queue_gets_503_and_the_rest_are_served(smollm2: Path, tmp_path: Path) -> None:
    short = {"prompt": "Hi", "max_tokens": 1}
    # One slot: with more, short answers would finish beside the long one
    # while the burst is still arriving, and free places for the rest.
    server = ServerProcess(smollm2, "-np", "1", home=tmp_path)
    with (
        server,
        httpx.Client(timeout=120, limits=httpx.Limits(max_connections=64)) as client,
        ThreadPoolExecutor(40) as pool,
    ):
        # One long answer holds the engine, so the burst waits in the queue:
        # 31 places are left beside it (32 in all) and the other 9 are refused.
        with client.stream("POST", f"{server.url}/v1/completions", json=COUNTING) as long_answer:
            lines = long_answer.iter_lines()  # kept: a dropped iterator would close the connection
            next(lines)
            burst = [pool.submit(client.post, f"{server.url}/v1/completions", json=short) for _ in range(40)]
            deadline = time.monotonic() + 60
            while sum(f.done() for f in burst) < 9 and time.monotonic() < deadline:
                time.sleep(0.05)
        # Leaving the block hangs up on the long answer, and the queue drains.
        responses = [f.result() for f in burst]
    refused = [r for r in responses if r.status_code == 503]
    assert len(refused) == 9 and all(r.json()["error"]["code"] == "queue_full" for r in refused)
    assert all(r.headers["Retry-After"] == "1" for r in refused)
    assert [r.status_code for r in responses].count(200) == 31


def test_a_system_prompt_comes_back_from_the_prompt_cache(smollm2: Path, tmp_path: Path) -> None:
    """One slot: an unrelated request takes it between two chats that share
    a long system prompt; the second gets it back from memory, and the
    official client sees it in usage.prompt_tokens_details."""
    document = (ROOT / "tests" / "corpus.txt").read_text()[:1500]
    system = {"role": "system", "content": "Answer from this text.\n\n" + document}

    def chat(client: openai.OpenAI, question: str) -> tuple[int, int]:
        messages = [system, {"role": "user", "content": question}]
        reply = client.chat.completions.create(model="m", messages=messages, temperature=0, max_tokens=4)
        assert reply.usage is not None and reply.usage.prompt_tokens_details is not None
        return reply.usage.prompt_tokens, reply.usage.prompt_tokens_details.cached_tokens or 0

    for flags, kept in ((), True), (("--cache-ram", "0"), False):
        with ServerProcess(smollm2, "-np", "1", *flags, home=tmp_path / str(kept)) as server:
            client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=120)
            chat(client, "What is this about?")
            client.completions.create(model="m", prompt="Once upon a time, far away,", max_tokens=4)
            prompt_tokens, cached = chat(client, "Who wrote it?")
            restored = _metric(server, "llamabin_prompt_cache_restored_total")
        if kept:
            assert cached > prompt_tokens - 20 and restored == 1, (cached, prompt_tokens)
        else:
            assert cached < 20 and restored == 0, (cached, prompt_tokens)


def test_native_completion_stream_and_whole(server: ServerProcess) -> None:
    whole = post(server, "/completion", {"prompt": "The capital of France is", "n_predict": 6, "temperature": 0}).json()
    assert whole["stop"] is True and whole["tokens_predicted"] == 6 and whole["stop_type"] == "limit"
    body = {"prompt": "The capital of France is", "n_predict": 6, "temperature": 0, "stream": True}
    with httpx.stream("POST", f"{server.url}/completion", json=body, timeout=120) as response:
        events = [json.loads(d) for d in sse_data(response)]
    assert all(e["stop"] is False for e in events[:-1]) and events[-1]["stop"] is True
    assert "".join(e["content"] for e in events) == whole["content"]


# -- llama.cpp's endpoints ---------------------------------------------------------


def test_tokenize_detokenize_round_trip(server: ServerProcess) -> None:
    text = "Héllo, wörld! 你好 🙂"
    tokens = post(server, "/tokenize", {"content": text}).json()["tokens"]
    assert tokens and all(isinstance(t, int) for t in tokens)
    assert post(server, "/detokenize", {"tokens": tokens}).json()["content"] == text
    pieces = post(server, "/tokenize", {"content": "Hello world", "with_pieces": True}).json()["tokens"]
    assert "".join(p["piece"] for p in pieces) == "Hello world"


METRIC_LINE = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? -?[0-9.e+-]+$')


def test_metrics_are_prometheus_text(server: ServerProcess) -> None:
    post(server, "/v1/completions", {"prompt": "Hello", "max_tokens": 2})
    response = httpx.get(f"{server.url}/metrics", timeout=10)
    assert response.headers["content-type"].startswith("text/plain")
    lines = response.text.splitlines()
    for line in lines:
        assert line.startswith("# HELP ") or line.startswith("# TYPE ") or METRIC_LINE.match(line), line
    names = {line.split()[2] for line in lines if line.startswith("# TYPE ")}
    for name in ("requests_total", "completion_tokens_total", "queue_depth", "tokens_per_second"):
        assert any(n.endswith(name) for n in names), name
    assert _metric(server, 'llamabin_http_requests_total{path="/v1/completions",status="200"}') >= 1
    assert _metric(server, "llamabin_completion_tokens_total") >= 2


def _metric(server: ServerProcess, name: str) -> float:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.rsplit(" ", 1)[0] == name]
    return values[0] if values else 0.0


def test_health_props_and_openapi(server: ServerProcess, smollm2: Path) -> None:
    assert server.health()["status"] == "ok"
    props = httpx.get(f"{server.url}/props", timeout=10).json()
    assert props["model"] == smollm2.name and props["n_ctx"] == 4096 and "im_start" in props["chat_template"]
    schema = httpx.get(f"{server.url}/openapi.json", timeout=10).json()
    for path in (
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/models",
        "/v1/embeddings",
        "/completion",
        "/tokenize",
        "/detokenize",
        "/health",
        "/props",
        "/metrics",
    ):
        assert path in schema["paths"], path


# -- what no client should send -----------------------------------------------------

CHAT = "/v1/chat/completions"
OK_MESSAGES = [{"role": "user", "content": "hi"}]
JSON = {"Content-Type": "application/json"}

# (name, path, raw body or JSON-able body, status, error code or None)
BAD_INPUTS: list[tuple[str, str, bytes | object, int, str | None]] = [
    ("malformed JSON", CHAT, b'{"messages": [', 400, "invalid_json"),
    ("empty body", CHAT, b"", 400, "invalid_json"),
    ("invalid UTF-8", CHAT, b'{"messages": [{"role": "user", "content": "\xff\xfe"}]}', 400, "invalid_encoding"),
    ("a JSON array, not an object", CHAT, [1, 2], 400, "invalid_type"),
    ("messages of the wrong type", CHAT, {"messages": "hi"}, 400, "invalid_type"),
    ("content of the wrong type", CHAT, {"messages": [{"role": "user", "content": 5}]}, 400, "invalid_type"),
    ("a number as text", CHAT, {"messages": OK_MESSAGES, "temperature": "0.5"}, 400, "invalid_type"),
    ("NaN", CHAT, b'{"messages": [{"role": "user", "content": "hi"}], "temperature": NaN}', 400, "invalid_value"),
    ("no messages", CHAT, {"messages": []}, 400, "invalid_value"),
    ("missing messages", CHAT, {"model": "m"}, 400, "missing_required_parameter"),
    ("unknown role", CHAT, {"messages": [{"role": "wizard", "content": "hi"}]}, 400, "invalid_value"),
    ("max_tokens 0", CHAT, {"messages": OK_MESSAGES, "max_tokens": 0}, 400, "invalid_value"),
    ("max_tokens negative", "/v1/completions", {"prompt": "hi", "max_tokens": -5}, 400, "invalid_value"),
    ("max_completion_tokens 0", CHAT, {"messages": OK_MESSAGES, "max_completion_tokens": 0}, 400, "invalid_value"),
    ("n above 1", CHAT, {"messages": OK_MESSAGES, "n": 3}, 400, None),
    ("temperature out of range", CHAT, {"messages": OK_MESSAGES, "temperature": 1e300}, 400, "invalid_value"),
    ("top_k past 32 bits", CHAT, {"messages": OK_MESSAGES, "top_k": 10**12}, 400, "invalid_value"),
    ("a huge repeat window", "/completion", {"prompt": "hi", "repeat_last_n": 10**14}, 400, "invalid_value"),
    ("too many stops", CHAT, {"messages": OK_MESSAGES, "stop": ["x"] * 1000}, 400, "invalid_value"),
    ("over-long prompt", "/v1/completions", {"prompt": "hello " * 6000}, 400, "context_length_exceeded"),
    ("body over the size limit", CHAT, b"[" + b" " * (5 * 1024 * 1024) + b"]", 413, "request_too_large"),
    ("nesting too deep", CHAT, b"[" * 100_000, 400, "invalid_json"),
    ("an integer of 5,000 digits", CHAT, b'{"messages": [], "seed": ' + b"9" * 5000 + b"}", 400, "invalid_json"),
    ("token id outside the vocabulary", "/detokenize", {"tokens": [1, 10**9]}, 400, None),
    ("negative token id in a prompt", "/v1/completions", {"prompt": [1, -7]}, 400, None),
    ("empty prompt", "/v1/completions", {"prompt": ""}, 400, None),
    ("bad grammar", "/completion", {"prompt": "hi", "grammar": "root ::= ("}, 400, None),
    (
        "bad JSON schema",
        CHAT,
        {
            "messages": OK_MESSAGES,
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nope"}}},
        },
        400,
        None,
    ),
    ("empty embedding input", "/v1/embeddings", {"input": ""}, 400, None),
    ("unknown URL", "/v2/nothing", {}, 404, "not_found"),
    # A \ud800 escape alone is not text: it fails wherever the string is encoded again.
    ("an unpaired surrogate", CHAT, b'{"messages": [{"role": "user", "content": "\\ud800"}]}', 400, "invalid_encoding"),
    ("an unpaired surrogate to tokenize", "/tokenize", b'{"content": "a\\uDFFFb"}', 400, "invalid_encoding"),
    (
        "an unpaired surrogate as a stop",
        "/completion",
        b'{"prompt": "hi", "stop": ["\\ud800"]}',
        400,
        "invalid_encoding",
    ),
    ("an unpaired surrogate to embed", "/v1/embeddings", b'{"input": "\\ud800"}', 400, "invalid_encoding"),
    (
        "a logit_bias key of a surrogate",
        CHAT,
        b'{"messages": [], "logit_bias": {"\\ud800": 1}}',
        400,
        "invalid_encoding",
    ),
    ("a superscript digit as a token id", CHAT, {"messages": OK_MESSAGES, "logit_bias": {"\u00b2": 1}}, 400, None),
    (
        "Arabic-Indic digits as a token id",
        CHAT,
        {"messages": OK_MESSAGES, "logit_bias": {"\u0661\u0662": 1}},
        400,
        None,
    ),
]


@pytest.mark.parametrize("name,path,body,status,code", BAD_INPUTS, ids=[case[0] for case in BAD_INPUTS])
def test_bad_input_gets_its_4xx(
    server: ServerProcess, name: str, path: str, body: bytes | object, status: int, code: str | None
) -> None:
    if isinstance(body, bytes):
        response = httpx.post(f"{server.url}{path}", content=body, headers=JSON, timeout=60)
    else:
        response = post(server, path, body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"] and error["type"] == "invalid_request_error"
    if code is not None:
        assert error["code"] == code
    assert server.alive


def test_wrong_method_is_405(server: ServerProcess) -> None:
    response = httpx.get(f"{server.url}{CHAT}", timeout=10)
    assert response.status_code == 405 and response.json()["error"]["code"] == "method_not_allowed"


def test_a_normal_request_succeeds_after_the_bad_ones(server: ServerProcess) -> None:
    response = post(server, CHAT, {"model": "gpt-4o", "messages": FRANCE, "max_tokens": 8, "temperature": 0})
    assert response.status_code == 200 and response.json()["choices"][0]["message"]["content"]
    assert server.alive and "Traceback" not in server.stderr


def test_a_client_that_sends_half_a_body_and_leaves(server: ServerProcess) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 1000\r\n\r\n{"messages": '
        )
    assert post(server, "/tokenize", {"content": "still here"}).status_code == 200


# -- keys, ports, and stopping ---------------------------------------------------------


def test_api_key(smollm2: Path, tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("s3cret-key\n")
    with_key = ServerProcess(smollm2, "--api-key-file", str(key_file), home=tmp_path)
    try:
        url = with_key.url
        assert httpx.get(f"{url}/v1/models", timeout=10).status_code == 401
        wrong = httpx.get(f"{url}/v1/models", headers={"Authorization": "Bearer nope"}, timeout=10)
        assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
        # The key is checked before the body is even read.
        assert httpx.post(f"{url}{CHAT}", content=b"{", headers=JSON, timeout=10).status_code == 401
        good = openai.OpenAI(base_url=f"{url}/v1", api_key="s3cret-key", max_retries=0)
        assert good.models.list().data
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{url}/v1", api_key="bad", max_retries=0).models.list()
        assert httpx.get(f"{url}/health", timeout=10).status_code == 200  # liveness stays public
        assert httpx.get(f"{url}/", timeout=10).status_code == 200  # the page asks for the key itself
    finally:
        with_key.stop()


def test_a_taken_port_is_one_clear_line_and_exit_1(smollm2: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "chat", "-m", str(smollm2), "--server", "--nobrowser", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
        )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"llamabin: error: port {port} on 127.0.0.1 is already in use: pick another with --port (--port 0 picks a free one)"
    ]


def test_a_public_address_without_a_key_warns(capsys: pytest.CaptureFixture[str]) -> None:
    warn_if_exposed(ServerSettings(host="0.0.0.0"))
    warn_if_exposed(ServerSettings(host="0.0.0.0", api_key="k"))
    warn_if_exposed(ServerSettings(host="127.0.0.1"))
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and "without an API key" in lines[0]


def test_ctrl_c_mid_stream_reports_in_the_stream_and_exits_130(smollm2: Path, tmp_path: Path) -> None:
    server = ServerProcess(smollm2, home=tmp_path)
    try:
        with httpx.stream("POST", f"{server.url}/v1/completions", json=COUNTING, timeout=60) as response:
            lines = response.iter_lines()
            for n, _line in enumerate(lines):
                if n > 8:
                    break  # the answer is under way
            server.proc.send_signal(signal.SIGINT)
            rest = [line[6:] for line in lines if line.startswith("data: ")]
        assert rest, "the stream ended without a word"
        error = json.loads(rest[-1])["error"]  # a stream already under way ends with its error
        assert error["type"] == "server_error" and "stopping" in error["message"]
        assert server.proc.wait(30) == 130
        assert "Traceback" not in server.stderr
    finally:
        server.stop()


def test_the_penalties_change_a_repetitive_greedy_answer(client: openai.OpenAI) -> None:
    """presence_penalty and frequency_penalty reach llama.cpp's penalties
    sampler: on a prompt that invites repetition, greedy output changes."""
    prompt = "Repeat after me, many times: red red red red red red red red"

    def complete(**penalties: float) -> str:
        reply = client.completions.create(model="any", prompt=prompt, max_tokens=24, temperature=0, seed=1, **penalties)
        return reply.choices[0].text

    plain = complete()
    assert plain.count("red") >= 3, plain  # the model repeats itself without them
    assert complete(frequency_penalty=0.0, presence_penalty=0.0) == plain
    assert complete(frequency_penalty=1.5) != plain
    assert complete(presence_penalty=1.5) != plain


def test_logit_bias_forces_and_bans_tokens(server: ServerProcess, client: openai.OpenAI) -> None:
    (blue,) = post(server, "/tokenize", {"content": " blue"}).json()["tokens"]
    prompt = "The colour of the sky is"

    def complete(**extra: Any) -> str:
        reply = client.completions.create(model="any", prompt=prompt, max_tokens=4, temperature=0, seed=1, **extra)
        return reply.choices[0].text

    plain = complete()
    assert complete(logit_bias={str(blue): 100}) == " blue" * 4  # +100: always that token
    (first, *_) = post(server, "/tokenize", {"content": plain}).json()["tokens"]
    banned = complete(logit_bias={str(first): -100})  # -100: never that token
    assert post(server, "/tokenize", {"content": banned}).json()["tokens"][0] != first


@pytest.mark.parametrize("bias", [{"blue": 5}, {"-3": 5}, {"99999999": 5}, {"5": 101}])
def test_a_bad_logit_bias_is_a_400_naming_it(server: ServerProcess, bias: dict[str, float]) -> None:
    reply = post(server, "/v1/completions", {"prompt": "hi", "max_tokens": 2, "logit_bias": bias})
    assert reply.status_code == 400
    assert "logit_bias" in json.dumps(reply.json()["error"])


# -- logprobs ---------------------------------------------------------------------------


def test_chat_logprobs_are_the_models_own_and_match_the_answer(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="any", messages=FRANCE, temperature=0, max_tokens=12, logprobs=True, top_logprobs=2
    )
    choice = reply.choices[0]
    assert choice.logprobs is not None and choice.logprobs.content is not None
    entries = choice.logprobs.content
    assert len(entries) == reply.usage.completion_tokens  # type: ignore[union-attr]
    assert b"".join(bytes(e.bytes or []) for e in entries).decode() == choice.message.content
    for entry in entries:
        assert len(entry.top_logprobs) == 2
        first, second = entry.top_logprobs
        # Greedy picks the likeliest token, which leads the list; the two are a distribution's.
        assert (first.token, first.logprob) == (entry.token, entry.logprob)
        assert 0 >= first.logprob >= second.logprob
        assert math.exp(first.logprob) + math.exp(second.logprob) <= 1 + 1e-9
    plain = client.chat.completions.create(model="any", messages=FRANCE, temperature=0, max_tokens=12)
    assert plain.choices[0].logprobs is None
    assert plain.choices[0].message.content == choice.message.content  # asking for them changes nothing


def test_streamed_chat_logprobs_add_up_to_the_whole_ones(client: openai.OpenAI) -> None:
    whole = client.chat.completions.create(
        model="any", messages=FRANCE, temperature=0, max_tokens=12, logprobs=True, top_logprobs=1
    )
    stream = client.chat.completions.create(
        model="any", messages=FRANCE, temperature=0, max_tokens=12, logprobs=True, top_logprobs=1, stream=True
    )
    streamed = [e for chunk in stream for c in chunk.choices if c.logprobs for e in c.logprobs.content or []]
    expected = whole.choices[0].logprobs.content  # type: ignore[union-attr]
    assert [(e.token, round(e.logprob, 6)) for e in streamed] == [(e.token, round(e.logprob, 6)) for e in expected]  # type: ignore[union-attr]


def test_completion_logprobs_with_echo_score_the_prompt_too(server: ServerProcess, client: openai.OpenAI) -> None:
    prompt = "The capital of France is"
    n_prompt = len(post(server, "/tokenize", {"content": prompt, "add_special": True}).json()["tokens"])
    reply = client.completions.create(model="any", prompt=prompt, max_tokens=4, temperature=0, logprobs=2, echo=True)
    choice = reply.choices[0]
    lp = choice.logprobs
    assert lp is not None and lp.tokens and lp.token_logprobs and lp.top_logprobs and lp.text_offset
    assert "".join(lp.tokens) == choice.text and choice.text.startswith(prompt)
    assert len(lp.tokens) == n_prompt + reply.usage.completion_tokens  # type: ignore[union-attr]
    # Nothing predicts the first token; every other one has its logprob and two alternatives.
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    assert all(v is not None and v <= 0 for v in lp.token_logprobs[1:])
    assert all(len(top) == 2 for top in lp.top_logprobs[1:])  # type: ignore[arg-type]
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(len(lp.tokens))]
    # The generated part's are those a request without echo gets.
    alone = client.completions.create(model="any", prompt=prompt, max_tokens=4, temperature=0, logprobs=2)
    assert alone.choices[0].logprobs.tokens == lp.tokens[n_prompt:]  # type: ignore[union-attr]
    assert alone.choices[0].logprobs.token_logprobs == pytest.approx(lp.token_logprobs[n_prompt:])  # type: ignore[union-attr]


def test_streamed_completion_logprobs_with_echo(server: ServerProcess) -> None:
    body = {"prompt": "The capital of France is", "max_tokens": 4, "temperature": 0, "logprobs": 1, "echo": True}
    with httpx.stream("POST", f"{server.url}/v1/completions", json={**body, "stream": True}, timeout=60) as response:
        events = [json.loads(d) for d in sse_data(response) if d != "[DONE]"]
    whole = post(server, "/v1/completions", body).json()["choices"][0]
    tokens = [t for e in events for c in e["choices"] if c["logprobs"] for t in c["logprobs"]["tokens"]]
    offsets = [o for e in events for c in e["choices"] if c["logprobs"] for o in c["logprobs"]["text_offset"]]
    assert tokens == whole["logprobs"]["tokens"] and offsets == whole["logprobs"]["text_offset"]
    assert "".join(c["text"] for e in events for c in e["choices"]) == whole["text"]


# -- fields this server does not have ------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "fields", "param"),
    [
        ("/v1/chat/completions", {"reasoning_effort": "high"}, "reasoning_effort"),
        ("/v1/chat/completions", {"audio": {"voice": "alloy", "format": "mp3"}}, "audio"),
        ("/v1/chat/completions", {"store": True}, "store"),
        ("/v1/chat/completions", {"functions": [{"name": "f"}]}, "functions"),
        ("/v1/chat/completions", {"top_k_tokens": 3}, "top_k_tokens"),
        ("/v1/completions", {"frobnicate": True}, "frobnicate"),
        ("/v1/embeddings", {"truncate": True}, "truncate"),
    ],
)
def test_unknown_or_unsupported_fields_are_refused_by_name(
    server: ServerProcess, path: str, fields: dict[str, Any], param: str
) -> None:
    base: dict[str, Any] = {
        "/v1/chat/completions": {"messages": FRANCE, "max_tokens": 2},
        "/v1/completions": {"prompt": "Hi", "max_tokens": 2},
        "/v1/embeddings": {"input": "Hi"},
    }[path]
    response = post(server, path, {**base, **fields})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and param in error["message"]


def test_top_logprobs_without_logprobs_is_refused(server: ServerProcess) -> None:
    response = post(server, "/v1/chat/completions", {"messages": FRANCE, "max_tokens": 2, "top_logprobs": 2})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "top_logprobs"


def test_what_clients_send_back_unasked_is_accepted(client: openai.OpenAI) -> None:
    """A previous answer's message sent back as it came, null and default
    options, and hints that change nothing here all pass."""
    first = client.chat.completions.create(model="any", messages=FRANCE, temperature=0, max_tokens=8)
    history = [*FRANCE, first.choices[0].message.model_dump(), {"role": "user", "content": "And of Spain?"}]
    reply = client.chat.completions.create(
        model="any",
        messages=history,  # type: ignore[arg-type]
        temperature=0,
        max_tokens=8,
        store=False,
        metadata=None,  # type: ignore[arg-type]
        modalities=["text"],
        parallel_tool_calls=True,
        user="u1",
        extra_body={"prompt_cache_key": "chat-1", "safety_identifier": "s"},
    )
    assert reply.choices[0].message.content
