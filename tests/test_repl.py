"""The chat REPL driven through prompt_toolkit's pipe input, against the real
SmolLM2 model: what the user would type goes in as keys, and the tests check
what the chat prints and what the conversation holds."""

from __future__ import annotations

import io
import json
import os
import re
import stat
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document
from prompt_toolkit.history import InMemoryHistory
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput

from chat.cli import dispatch
from chat.conversation import Conversation, Message, Reply
from chat.engine import Engine, EngineConfig, FinishReason, SamplingParams
from chat.engine.llama import ModelSource
from chat.engine.types import Chunk
from chat.paths import history_file
from chat.repl import Repl
from chat.repl.commands import builtin_commands
from chat.repl.input import PromptReader, RegistryCompleter, StdinReader, open_history
from chat.repl.registry import Registry
from chat.repl.state import ReplState
from chat.settings import Mode, Settings
from templates import resolve
from tests.helpers import run_chat

ENTER = "\r"
CTRL_C = "\x03"
ESC_ENTER = "\x1b\r"
HELPFUL = "You are a helpful assistant."
CONTEXT_RE = re.compile(r"context: (\d+) / (\d+) tokens")


def _engine(model: Path, n_ctx: int) -> Engine:
    # One thread: llama.cpp's threads spin while they wait for each other, so
    # on a busy machine (tests run side by side) more threads are ten times slower.
    return Engine(EngineConfig(ModelSource(model), n_ctx=n_ctx, n_threads=1))


@pytest.fixture(scope="module")
def engine(smollm2: Path) -> Iterator[Engine]:
    with _engine(smollm2, 2048) as eng:
        yield eng


def _conversation(engine: Engine, max_tokens: int = 24) -> Conversation:
    template = resolve(None, engine.info.metadata, engine.bos_text, engine.eos_text)
    return Conversation(engine, template, sampling=SamplingParams(temperature=0), max_tokens=max_tokens)


@pytest.fixture
def conv(engine: Engine) -> Conversation:
    return _conversation(engine)


def type_into(conversation: Conversation, keys: str, registry: Registry[ReplState] | None = None) -> str:
    """Run the chat on `keys` until they run out; return what it printed."""
    registry = registry or builtin_commands()
    out = io.StringIO()
    with create_pipe_input() as pipe:
        pipe.send_text(keys)
        pipe.close()  # the end of the keys is Ctrl-D's end of input
        reader = PromptReader(registry, InMemoryHistory(), input=pipe, output=DummyOutput())
        assert Repl(conversation, reader, out, registry).run() == 0
    text = out.getvalue()
    assert "Traceback" not in text
    return text


def lines(*typed: str) -> str:
    return "".join(t + ENTER for t in typed)


def test_help_lists_every_registered_command(conv: Conversation) -> None:
    shown = type_into(conv, lines("/help"))
    for command in builtin_commands():
        assert re.search(rf"^  /{command.name}\b.*{re.escape(command.help)}", shown, re.M), command.name
    assert "/quit" in shown  # aliases are listed
    assert "Escape then Enter" in shown  # and the newline key


def test_help_for_one_command_shows_its_usage(conv: Conversation) -> None:
    shown = type_into(conv, lines("/help save", "/help nosuch"))
    assert "/save FILE  save the conversation" in shown
    assert "no command /nosuch" in shown


def test_tab_completion_offers_commands_and_files(tmp_path: Path) -> None:
    completer = RegistryCompleter(builtin_commands())

    def offered(text: str) -> list[str]:
        found = completer.get_completions(Document(text), CompleteEvent(completion_requested=True))
        return [c.text for c in found]

    assert offered("/he") == ["/help"]
    assert offered("/qu") == ["/quit"]
    assert offered("/help sa") == ["save"]
    (tmp_path / "chat.json").write_text("{}")
    (tmp_path / "notes").mkdir()
    assert offered(f"/load {tmp_path}/c") == [f"{tmp_path}/chat.json"]
    assert offered(f"/save {tmp_path}/n") == [f"{tmp_path}/notes/"]
    assert offered("hello /he") == []


def test_unknown_command_points_to_help(conv: Conversation) -> None:
    shown = type_into(conv, lines("/frobnicate now"))
    assert "unknown command /frobnicate: type /help for the list" in shown
    assert conv.messages == []


def test_bad_arguments_print_one_line(conv: Conversation, tmp_path: Path) -> None:
    nowhere = tmp_path / "no-such-dir" / "chat.json"
    shown = type_into(conv, lines("/save", "/context please", "/load", "/", f"/save {nowhere}"))
    assert "usage: /save FILE" in shown
    assert "/context takes no argument" in shown
    assert "usage: /load FILE" in shown
    assert "unknown command /: type /help" in shown
    assert f"error: cannot write {nowhere}: No such file or directory" in shown


def test_context_grows_after_a_turn_and_undo_shrinks_it(conv: Conversation) -> None:
    shown = type_into(conv, lines("/context", "What is 2+2?", "/context", "/undo", "/context"))
    used = [int(m.group(1)) for m in CONTEXT_RE.finditer(shown)]
    assert len(used) == 3
    assert used[0] == 0 and used[1] > 10 and used[2] == 0
    assert {int(m.group(2)) for m in CONTEXT_RE.finditer(shown)} == {2048}
    assert "removed the last exchange" in shown
    assert conv.messages == []


def test_answer_is_printed_and_kept(conv: Conversation) -> None:
    conv.system_prompt = HELPFUL  # without it this small model rambles in French
    shown = type_into(conv, lines("What is the capital of France?"))
    assert [m.role for m in conv.messages] == ["user", "assistant"]
    answer = conv.messages[1].content
    assert answer.strip() and answer in shown
    assert "Paris" in answer


def test_save_then_load_round_trips(engine: Engine, conv: Conversation, tmp_path: Path) -> None:
    path = tmp_path / "chat.json"
    shown = type_into(conv, lines("/system You are terse.", "Name a color.", f"/save {path}"))
    assert f"saved 2 messages to {path}" in shown
    saved = json.loads(path.read_text())
    assert saved["system_prompt"] == "You are terse."

    fresh = _conversation(engine)
    shown = type_into(fresh, lines(f"/load {path}", "/system"))
    assert f"loaded 2 messages from {path}" in shown
    assert "system prompt: You are terse." in shown
    assert fresh.messages == conv.messages


def test_loading_a_bad_file_keeps_the_conversation(conv: Conversation, tmp_path: Path) -> None:
    conv.messages = [Message("user", "hello"), Message("assistant", "hi there")]
    bad = tmp_path / "bad.json"
    bad.write_text("this is not json")
    shown = type_into(conv, lines(f"/load {bad}", f"/load {tmp_path / 'missing.json'}"))
    assert f"error: {bad} is not a llamabin transcript" in shown
    assert "error: cannot read" in shown
    assert conv.messages == [Message("user", "hello"), Message("assistant", "hi there")]


@pytest.mark.parametrize(
    "doc, says",
    [
        ({"system_prompt": None, "messages": {}}, "is not a llamabin transcript"),
        ({"system_prompt": None, "messages": [{"role": "user", "content": {"a": 1}}]}, "has a message that is not"),
        ({"system_prompt": None, "messages": [{"role": "user", "content": None}]}, "has a message that is not"),
        ({"system_prompt": 5, "messages": []}, "has a system_prompt that is not a text"),
        ("[" * 100000 + "]" * 100000, "is not a llamabin transcript"),
    ],
)
def test_a_transcript_that_is_not_text_is_refused(conv: Conversation, tmp_path: Path, doc: object, says: str) -> None:
    path = tmp_path / "odd.json"
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    conv.messages = [Message("user", "hello"), Message("assistant", "hi there")]
    shown = type_into(conv, lines(f"/load {path}"))
    assert f"error: {path} {says}" in shown
    assert conv.messages == [Message("user", "hello"), Message("assistant", "hi there")]


def test_load_refuses_a_fifo_at_once(conv: Conversation, tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    shown = type_into(conv, lines(f"/load {fifo}"))
    assert f"error: {fifo} is not a regular file" in shown


def test_a_long_loaded_history_is_cut_where_it_first_fits(engine: Engine, tmp_path: Path) -> None:
    """Found by bisection: cutting one exchange at a time rendered and
    tokenized the whole history again for each, minutes for 2,000 turns."""
    conv = _conversation(engine, max_tokens=16)
    history = [Message(role, f"{role} turn {i // 2}") for i in range(4000) for role in ("user", "assistant")][:4000]
    conv.messages = list(history)
    renders = 0
    render = conv.render

    def counted(add_generation_prompt: bool = True) -> str:
        nonlocal renders
        renders += 1
        return render(add_generation_prompt)

    conv.render = counted  # type: ignore[method-assign]
    tokens, dropped = conv._fit()
    assert renders <= 16  # log2(2000) + a few, not 2000
    assert len(tokens) + 16 <= conv.n_ctx
    assert conv.messages == history[dropped:] and conv.messages[0].role == "user"
    conv.messages = history[dropped - 2 :]  # one exchange more would not have fit
    assert len(conv._tokens()) + 16 > conv.n_ctx


def test_dump_writes_the_rendered_conversation(conv: Conversation, tmp_path: Path) -> None:
    conv.messages = [Message("user", "hello"), Message("assistant", "hi there")]
    out = tmp_path / "dump.txt"
    shown = type_into(conv, lines("/dump", f"/dump {out}"))
    assert "<|im_start|>user\nhello<|im_end|>" in shown
    assert out.read_text() == conv.render(add_generation_prompt=False)


@pytest.fixture
def loose_umask() -> Iterator[None]:
    """A umask that would make new files readable by everyone (0644)."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.parametrize("command", ["save", "dump"])
def test_save_and_dump_write_private_files(command: str, conv: Conversation, tmp_path: Path, loose_umask: None) -> None:
    conv.messages = [Message("user", "my secret"), Message("assistant", "kept")]
    fresh = tmp_path / "new.txt"
    shown = type_into(conv, lines(f"/{command} {fresh}"))
    assert "error" not in shown and "my secret" in fresh.read_text()
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["new.txt"]  # no temporary file left


def test_save_replaces_an_earlier_save_and_makes_it_private(
    conv: Conversation, tmp_path: Path, loose_umask: None
) -> None:
    old = tmp_path / "chat.json"
    old.write_text('{"system_prompt": null, "messages": []}\n')
    old.chmod(0o644)
    conv.messages = [Message("user", "my secret"), Message("assistant", "kept")]
    shown = type_into(conv, lines(f"/save {old}"))
    assert f"saved 2 messages to {old}" in shown and "my secret" in old.read_text()
    assert stat.S_IMODE(old.stat().st_mode) == 0o600


@pytest.mark.parametrize(
    "command, says",
    [
        ("save", "exists and is not a saved conversation: give a new file name"),
        ("dump", "exists: give a new file name"),
    ],
)
def test_save_and_dump_never_write_over_another_file(
    command: str, says: str, conv: Conversation, tmp_path: Path
) -> None:
    conv.messages = [Message("user", "hello"), Message("assistant", "hi there")]
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes")
    shown = type_into(conv, lines(f"/{command} {notes}"))
    assert f"error: {notes} {says}" in shown
    assert notes.read_text() == "my notes"


@pytest.mark.parametrize("command", ["save", "dump"])
def test_save_and_dump_refuse_to_write_through_a_link(command: str, conv: Conversation, tmp_path: Path) -> None:
    conv.messages = [Message("user", "hello"), Message("assistant", "hi there")]
    victim = tmp_path / "victim"
    victim.write_text("untouched")
    link = tmp_path / "chat.json"
    link.symlink_to(victim)
    shown = type_into(conv, lines(f"/{command} {link}"))
    assert f"error: {link} is a symbolic link: give the path of a regular file" in shown
    assert victim.read_text() == "untouched"
    assert link.is_symlink()


def test_save_does_not_use_a_guessable_temporary_name(conv: Conversation, tmp_path: Path) -> None:
    """Someone who can write to the folder plants FILE.tmp as a link to a
    file of the user's; saving FILE must not write through it."""
    conv.messages = [Message("user", "hello"), Message("assistant", "hi there")]
    victim = tmp_path / "victim"
    victim.write_text("untouched")
    path = tmp_path / "chat.json"
    (tmp_path / "chat.json.tmp").symlink_to(victim)
    shown = type_into(conv, lines(f"/save {path}"))
    assert f"saved 2 messages to {path}" in shown
    assert victim.read_text() == "untouched"
    assert json.loads(path.read_text())["messages"][0]["content"] == "hello"


def test_stats_template_system_and_clear(conv: Conversation) -> None:
    shown = type_into(
        conv,
        lines(
            "/stats",
            "Hi!",
            "/stats",
            "Name a color.",
            "/stats",
            "/template",
            "/system Be brief.",
            "/system",
            "/clear",
            "/context",
        ),
    )
    assert "no answer yet" in shown
    prompts = re.findall(r"prompt: (\d+) tokens \((\d+) cached, (\d+) evaluated\) at [\d.]+ tokens/s", shown)
    assert len(prompts) == 2
    (total1, _, _), (total2, cached2, evaluated2) = [tuple(map(int, p)) for p in prompts]
    assert cached2 > total1 // 2  # the second turn reuses the first from the KV cache
    assert cached2 + evaluated2 == total2 > total1
    assert re.search(r"generation: [1-9]\d* tokens at [\d.]+ tokens/s", shown)
    assert "template: " in shown and "'<|im_end|>'" in shown
    assert "system prompt: Be brief." in shown
    assert conv.messages == [] and conv.system_prompt == "Be brief."


def test_multi_line_messages(conv: Conversation) -> None:
    type_into(conv, lines('"""', "/not a command", "line two", '"""'))
    assert conv.messages[0] == Message("user", "/not a command\nline two")
    conv.clear()
    type_into(conv, "first" + ESC_ENTER + "second" + ENTER)
    assert conv.messages[0] == Message("user", "first\nsecond")


def test_ctrl_c_clears_the_line_then_warns_then_exits(conv: Conversation) -> None:
    shown = type_into(conv, "some words" + CTRL_C + lines("/context") + CTRL_C + CTRL_C + lines("/help"))
    assert "context: 0 / 2048" in shown  # the words were cleared, not sent
    assert shown.count("press Ctrl-C again to exit") == 1
    assert "commands:" not in shown  # the second Ctrl-C exited before /help
    assert conv.messages == []


def test_a_full_context_drops_old_turns_with_a_notice(smollm2: Path) -> None:
    with _engine(smollm2, 256) as small:
        conv = _conversation(small, max_tokens=32)
        questions = [f"Tell me a fact about the number {n}." for n in range(8)]
        shown = type_into(conv, lines(*questions, "/context"))
    assert "[context full: dropped the oldest" in shown
    used, total = map(int, CONTEXT_RE.findall(shown)[-1])
    assert total == 256 and used <= 256
    assert conv.messages[-2].content == questions[-1]


def test_a_conversation_past_the_context_says_what_the_next_message_does(smollm2: Path) -> None:
    """A message that fits alone is answered until the context ends; with its
    end-of-turn tokens the conversation is then longer than the context."""
    with _engine(smollm2, 256) as small:
        conv = _conversation(small, max_tokens=64)
        shown = type_into(conv, lines("Say this back: " + "one two three four five " * 42, "/context"))
    used, total = map(int, CONTEXT_RE.findall(shown)[-1])
    assert used >= total == 256
    assert f"context: {used} / 256 tokens (2 messages); full: the next message drops the oldest ones" in shown


def test_a_message_larger_than_the_context_is_refused_in_one_line(smollm2: Path) -> None:
    with _engine(smollm2, 256) as small:
        conv = _conversation(small, max_tokens=16)
        # Pasted, as a terminal sends it: typed key by key it would be slow.
        paste = "\x1b[200~" + "word " * 400 + "\x1b[201~" + ENTER
        shown = type_into(conv, paste + lines("Hi!"))
    assert re.search(r"^error: the prompt is \d+ tokens, more than the context of 256 tokens", shown, re.M)
    assert [m.role for m in conv.messages] == ["user", "assistant"]
    assert conv.messages[0].content == "Hi!"


def test_history_is_kept_in_the_history_file(conv: Conversation) -> None:
    path = history_file()
    registry = builtin_commands()
    with create_pipe_input() as pipe:
        pipe.send_text(lines("/context", "/stats"))
        pipe.close()
        reader = PromptReader(registry, open_history(path), input=pipe, output=DummyOutput())
        Repl(conv, reader, io.StringIO(), registry).run()
    assert "/context" in path.read_text() and "/stats" in path.read_text()


def test_plain_lines_when_not_a_terminal(conv: Conversation) -> None:
    out = io.StringIO()
    reader = StdinReader(io.StringIO("/context\n//help me\n/exit\nnever read\n"))
    assert Repl(conv, reader, out, builtin_commands()).run() == 0
    assert "context: 0 / 2048 tokens" in out.getvalue()
    assert conv.messages[0] == Message("user", "/help me")
    assert all("never read" not in m.content for m in conv.messages)


def test_piped_chat_through_the_command_line(smollm2: Path) -> None:
    proc = run_chat(
        "-m",
        str(smollm2),
        "--chat",
        "--temp",
        "0",
        "-n",
        "16",
        "-t",
        "1",
        input="What is 2+2?\n/context\n/exit\n",
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "type /help for commands" in proc.stdout
    used = CONTEXT_RE.search(proc.stdout)
    assert used and int(used.group(1)) > 10
    assert "Traceback" not in proc.stderr


def test_the_default_mode_serves_beside_the_chat_while_it_runs(
    smollm2: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The wiring, in-process: the server starts on the chat's engine once
    the model is loaded, answers while the chat runs, and is gone after."""
    seen: list[str] = []
    shown: list[str] = []  # what the terminal showed, read in two parts

    class Input(io.StringIO):
        """The user's lines; the second is read only after a call to the server."""

        def readline(self, size: int | None = -1) -> str:
            line = super().readline()
            if line == "/context\n":
                shown.append(capsys.readouterr().out)
                url = re.search(r"web chat and OpenAI API: (\S+)", shown[0])
                assert url, "the server was not announced before the chat read its first line"
                seen.append(url.group(1))
                with urllib.request.urlopen(url.group(1) + "/v1/models", timeout=30) as response:
                    seen.append(json.load(response)["data"][0]["id"])
            return line

    monkeypatch.setattr(sys, "stdin", Input("/context\n/exit\n"))
    settings = Settings(
        mode=Mode.DEFAULT, model=ModelSource(smollm2), n_ctx=1024, threads=1, port=0, open_browser=False
    )
    assert dispatch(settings) == 0
    assert seen[1] == "SmolLM2-135M-Instruct.Q4_1.gguf"
    shown.append(capsys.readouterr().out)
    assert "SmolLM2-135M-Instruct.Q4_1.gguf, context 1024 tokens; type /help for commands" in shown[0]
    assert "context: 0 / 1024 tokens" in shown[1]
    with pytest.raises(OSError):  # the chat ended, and so did its server
        urllib.request.urlopen(seen[0] + "/health", timeout=5)


class _Stream:
    """A generation that still delivers text after it was cancelled, as the
    engine's queue does for the tokens already decoded."""

    def __init__(self) -> None:
        self.final: Chunk | None = None
        self._chunks = [Chunk("Once "), Chunk("upon "), Chunk("a time", finish_reason=FinishReason.CANCELLED)]

    def __iter__(self) -> Iterator[Chunk]:
        while self._chunks:
            chunk = self._chunks.pop(0)
            if chunk.finish_reason is not None:
                self.final = chunk
            yield chunk

    def cancel(self) -> None:
        pass


def test_a_cancelled_answer_keeps_only_what_was_shown(conv: Conversation) -> None:
    conv.messages = [Message("user", "tell me a story")]
    reply = Reply(conv, _Stream(), None)  # type: ignore[arg-type]
    shown = next(iter(reply))
    reply.cancel()
    assert shown == "Once "
    assert conv.messages[-1] == Message("assistant", "Once ")


def test_file_names_near_and_past_the_limit(conv: Conversation, tmp_path: Path) -> None:
    conv.messages = [Message("user", "hello"), Message("assistant", "hi there")]
    near, wide, past = tmp_path / ("n" * 250), tmp_path / ("😀" * 62), tmp_path / ("p" * 300)  # 250, 248 bytes
    shown = type_into(conv, lines(f"/save {near}", f"/save {wide}", f"/dump {past}", f"/save {past}"))
    assert f"saved 2 messages to {near}" in shown and f"saved 2 messages to {wide}" in shown
    assert shown.count(f"error: cannot write {past}: File name too long") == 2
    assert "internal error" not in shown


def test_a_history_file_that_fails_is_said_once_and_the_chat_goes_on(
    conv: Conversation, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "history"
    path.mkdir()  # every read and write of it fails, as on a full disk
    registry = builtin_commands()
    out = io.StringIO()
    with create_pipe_input() as pipe:
        pipe.send_text(lines("/context", "/stats", "/context"))
        pipe.close()
        reader = PromptReader(registry, open_history(path), input=pipe, output=DummyOutput())
        assert Repl(conv, reader, out, registry).run() == 0
    assert out.getvalue().count("context: 0 / 2048 tokens") == 2  # the chat went on
    # What the terminal shows above the prompt (patch_stdout takes stderr there):
    history = open_history(path)
    list(history.load_history_strings())
    history.store_string("/context")
    history.store_string("/stats")
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(warnings) == 1 and warnings[0].startswith(f"llamabin: warning: the chat history is not kept ({path}:")


def test_a_new_history_file_is_the_users_alone(tmp_path: Path, loose_umask: None) -> None:
    path = tmp_path / "data" / "history"
    open_history(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_an_empty_answer_is_said_not_dropped_unseen(engine: Engine) -> None:
    conv = _conversation(engine)
    conv.sampling = SamplingParams(temperature=0, grammar='root ::= ""')
    shown = type_into(conv, lines("hello", "/undo"))
    assert "[the model answered nothing; your message was not kept]" in shown
    assert conv.messages == []


def test_ctrl_c_inside_a_block_drops_the_block_not_the_chat(conv: Conversation) -> None:
    shown = type_into(conv, lines('"""', "first line") + CTRL_C + lines("/context"))
    assert "[the message was discarded]" in shown
    assert "press Ctrl-C again" not in shown
    assert "context: 0 / 2048 tokens" in shown
    assert conv.messages == []
