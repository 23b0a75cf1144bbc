"""Ollama's API, through the official `ollama` client (PyPI), against the
real server and model: what Open WebUI, Continue or Copilot's Ollama
provider would call first, then chat, generate and embeddings."""

from __future__ import annotations

import httpx
import ollama
import pytest

from tests.serverproc import ServerProcess

OPTIONS = {"temperature": 0, "seed": 1, "num_predict": 24}
QUESTION = [{"role": "user", "content": "Name three colours."}]


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> ollama.Client:
    return ollama.Client(host=server.url, timeout=300)


@pytest.fixture(scope="module")
def name(client: ollama.Client) -> str:
    (model,) = client.list().models
    return str(model.model)


def test_list_names_the_model_with_its_tag(client: ollama.Client, name: str) -> None:
    (model,) = client.list().models
    assert name == "SmolLM2-135M-Instruct.Q4_1.gguf:latest"  # the /v1/models id, tagged
    assert model.size == 96_576_768  # the weights, as llama.cpp counts them
    assert model.details is not None and model.details.format == "gguf"
    assert model.details.family == "llama"


def test_show_gives_details_and_capabilities(client: ollama.Client, name: str) -> None:
    shown = client.show(name)
    assert shown.capabilities is not None and {"completion", "embedding"} <= set(shown.capabilities)
    assert shown.modelinfo is not None and shown.modelinfo["llama.embedding_length"] == 576
    assert shown.template and "<|im_start|>" in shown.template


def test_the_name_without_its_tag_works_too(client: ollama.Client, name: str) -> None:
    reply = client.chat(name.removesuffix(":latest"), messages=QUESTION, options=OPTIONS)
    assert reply.message.content


def test_chat_streamed_joins_to_the_answer_not_streamed(client: ollama.Client, name: str) -> None:
    whole = client.chat(name, messages=QUESTION, options=OPTIONS)
    assert whole.done and whole.done_reason in ("stop", "length") and whole.message.role == "assistant"
    assert whole.message.content.strip() and whole.eval_count and whole.prompt_eval_count
    parts = list(client.chat(name, messages=QUESTION, options=OPTIONS, stream=True))
    assert len(parts) > 2 and parts[-1].done and not any(p.done for p in parts[:-1])
    assert "".join(p.message.content or "" for p in parts) == whole.message.content
    assert parts[-1].eval_count == whole.eval_count


def test_generate_answers_a_prompt(client: ollama.Client, name: str) -> None:
    plain = client.generate(name, prompt="What is the capital of France?", options=OPTIONS)
    system = "You are a helpful assistant. Answer in one short English sentence."
    guided = client.generate(name, prompt="What is the capital of France?", system=system, options=OPTIONS)
    assert plain.done and guided.done and plain.response.strip() and guided.response.strip()
    assert guided.response != plain.response  # the system prompt went through the template
    raw = client.generate(name, prompt="four score and seven", raw=True, options=OPTIONS)
    assert raw.response.strip() and raw.response not in (plain.response, guided.response)


def test_a_repeat_window_of_minus_one_is_the_whole_context(client: ollama.Client, name: str) -> None:
    """Ollama's repeat_last_n -1: the penalty over the whole context."""
    prompt = "Once upon a time, a lighthouse keeper"
    client.generate(name, prompt=prompt, raw=True, options={"num_predict": 1})  # the answers below start from the cache

    def answer(window: int) -> str:
        options = {**OPTIONS, "num_predict": 40, "repeat_penalty": 1.5, "repeat_last_n": window}
        return str(client.generate(name, prompt=prompt, raw=True, options=options).response)

    whole = answer(-1)
    assert whole == answer(8192)
    assert whole != answer(0)


def test_format_json_gives_json(client: ollama.Client, name: str) -> None:
    import json

    options = {**OPTIONS, "num_predict": 400}
    reply = client.chat(
        name, messages=[{"role": "user", "content": "A colour as JSON."}], format="json", options=options
    )
    assert reply.done_reason == "stop"
    assert isinstance(json.loads(reply.message.content or ""), dict)  # grammar-constrained: an object


def test_embed_two_inputs(client: ollama.Client, name: str) -> None:
    result = client.embed(name, input=["red", "a long sentence about the colour green"])
    assert len(result.embeddings) == 2 and all(len(v) == 576 for v in result.embeddings)
    assert result.embeddings[0] != result.embeddings[1]
    old = client.embeddings(name, prompt="red")
    assert len(old.embedding) == 576


def test_embed_cuts_an_input_too_long_unless_told_not_to(client: ollama.Client, name: str) -> None:
    """Ollama's truncate, true unless said: the input's first tokens (as many
    as the model embeds at once) stand for it, or a 400 names the limit."""
    long = "the colour green, " * 400  # about 2,000 tokens
    cut = client.embed(name, input=long)
    assert cut.prompt_eval_count == 512 and len(cut.embeddings[0]) == 576
    assert cut.embeddings == client.embed(name, input=long + " and then something else").embeddings
    with pytest.raises(ollama.ResponseError) as caught:
        client.embed(name, input=long, truncate=False)
    assert caught.value.status_code == 400 and "more than the context of 512 tokens" in caught.value.error


def test_an_unknown_model_is_ollamas_404(client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as caught:
        client.chat("llama3:8b", messages=QUESTION)
    assert caught.value.status_code == 404
    assert "model 'llama3:8b' not found" in caught.value.error


def test_an_option_this_server_lacks_is_refused_by_name(client: ollama.Client, name: str) -> None:
    with pytest.raises(ollama.ResponseError) as caught:
        client.chat(name, messages=QUESTION, options={"mirostat": 2})
    assert caught.value.status_code == 400 and "mirostat" in caught.value.error
    # Options about loading the model do nothing here and are accepted.
    assert client.chat(name, messages=QUESTION, options={**OPTIONS, "num_thread": 4, "num_gpu": 0}).done


@pytest.mark.parametrize(
    "path, body, status, words",
    [
        ("/api/chat", b"{not json", 400, "json"),
        ("/api/chat", b"", 400, "empty"),
        ("/api/chat", b'{"model": "x", "messages": "hi"}', 400, "messages"),
        ("/api/chat", b'{"messages": []}', 400, "model"),
        ("/api/show", b"{}", 400, "model is required"),
        # Refused before any route: the body's size and encoding, in Ollama's shape too.
        ("/api/chat", b'{"model": "x", "messages": [{"role": "user", "content": "\xff"}]}', 400, "utf-8"),
        ("/api/generate", b'{"model": "x", "prompt": "' + b"a" * (5 * 1024 * 1024) + b'"}', 413, "larger than"),
        ("/api/generate", b'{"model": "x", "prompt": "\\ud800"}', 400, "surrogate"),
    ],
)
def test_malformed_requests_get_ollamas_error_shape(
    server: ServerProcess, path: str, body: bytes, status: int, words: str
) -> None:
    reply = httpx.post(f"{server.url}{path}", content=body, headers={"Content-Type": "application/json"})
    assert reply.status_code == status
    error = reply.json()
    assert list(error) == ["error"] and isinstance(error["error"], str) and words in error["error"].lower()


def test_version_and_ps(server: ServerProcess, name: str) -> None:
    assert httpx.get(f"{server.url}/api/version").json()["version"]
    (running,) = httpx.get(f"{server.url}/api/ps").json()["models"]
    assert running["model"] == name and running["context_length"] > 0


def test_penalty_options_reach_the_sampler(client: ollama.Client, name: str) -> None:
    prompt = "Repeat after me, many times: red red red red red red red red"
    plain = client.generate(name, prompt=prompt, raw=True, options=OPTIONS).response
    assert plain.count("red") >= 3, plain
    penalised = client.generate(name, prompt=prompt, raw=True, options={**OPTIONS, "frequency_penalty": 1.5})
    assert penalised.response != plain
