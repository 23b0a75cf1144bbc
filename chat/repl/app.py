"""The chat loop: read a line, run it as a command or ask the model, stream
the answer. All the chat logic lives in `Conversation`; this is only the
terminal around it."""

from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import TextIO

from chat.conversation import Conversation, ConversationOptions, Reply
from chat.engine import FinishReason
from chat.errors import EXIT_OK, LlamabinError, OutputError
from chat.paths import NoHomeError, history_file
from chat.repl.commands import builtin_commands
from chat.repl.input import CONTINUATION, PROMPT, LineReader, make_reader
from chat.repl.registry import CommandError, Registry
from chat.repl.state import Console, ReplState
from chat.session import Session
from templates import TemplateError

BLOCK_FENCE = '"""'


def run_repl(session: Session, options: ConversationOptions, history: Path | None = None, verbose: bool = False) -> int:
    """Run the terminal chat until /exit, Ctrl-D or end of input; return the
    exit code."""
    conversation = options.start(session)
    registry = builtin_commands()
    reader = make_reader(registry, history or _history_path())
    repl = Repl(conversation, reader, sys.stdout, registry, verbose=verbose)
    repl.banner(session.engine.info.model_name)
    return repl.run()


def _history_path() -> Path | None:
    try:
        return history_file()
    except NoHomeError:
        return None


class Repl:
    def __init__(
        self,
        conversation: Conversation,
        reader: LineReader,
        out: TextIO,
        registry: Registry[ReplState],
        verbose: bool = False,
    ) -> None:
        self.reader = reader
        self.registry = registry
        self.console = Console(out)
        self.state = ReplState(conversation, self.console, keys_help=reader.keys_help)
        self.verbose = verbose

    @property
    def conversation(self) -> Conversation:
        return self.state.conversation

    def banner(self, model_name: str) -> None:
        self.console.say(
            f"{model_name}, context {self.conversation.n_ctx} tokens; type /help for commands, Ctrl-D to exit"
        )

    def run(self) -> int:
        armed = False  # Ctrl-C was pressed on an empty line: one more exits
        while not self.state.exit_requested:
            try:
                text, fenced = self._read_message()
            except EOFError:
                self.console.end_line()
                return EXIT_OK
            except KeyboardInterrupt:
                if armed:
                    return EXIT_OK
                armed = True
                self.console.say("press Ctrl-C again to exit")
                continue
            armed = False
            self._handle(text, fenced)
        return EXIT_OK

    def _read_message(self) -> tuple[str, bool]:
        """One line, or the lines between two \"\"\" lines (then True: the
        text is a message even if it starts with a slash)."""
        line = self.reader.read(PROMPT)
        if line.strip() != BLOCK_FENCE:
            return line, False
        lines: list[str] = []
        while True:
            try:
                line = self.reader.read(CONTINUATION)
            except EOFError:  # the input ended inside the block: send what there is
                break
            except KeyboardInterrupt:  # drops the block, not the chat: no "again to exit" here
                self.console.notice("the message was discarded")
                return "", True
            if line.strip() == BLOCK_FENCE:
                break
            lines.append(line)
        return "\n".join(lines), True

    def _handle(self, text: str, fenced: bool) -> None:
        stripped = text.strip()
        if not stripped:
            return
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:  # piped bytes that are not UTF-8 arrive as lone surrogates
            bad = text[exc.start].encode("utf-8", "surrogateescape").hex()
            self.console.error(f"that line is not UTF-8 text (byte 0x{bad}): nothing was done with it")
            return
        try:
            if fenced:
                self._answer(text)
            elif stripped.startswith("//"):
                self._answer(text.lstrip()[1:])
            elif stripped.startswith("/"):
                self.registry.run(self.state, stripped)
            else:
                self._answer(text)
        except CommandError as exc:
            self.console.say(str(exc))
        except OutputError:  # nothing more can be shown: the chat ends, saying why on stderr
            raise
        except (LlamabinError, TemplateError) as exc:
            self.console.error(str(exc))
        except KeyboardInterrupt:
            self.console.notice("interrupted")
        except Exception as exc:  # a bug must not throw away the user's conversation
            if self.verbose:
                traceback.print_exc()
            self.console.error(f"internal error: {exc!r}")

    def _answer(self, text: str) -> None:
        reply = self.conversation.ask(text)
        if reply.notice:
            self.console.notice(reply.notice)
        try:
            for piece in reply:
                self.console.write(piece)
        except KeyboardInterrupt:
            _cancel(reply)
            self.console.notice("stopped; the partial answer is kept")
        except OutputError:
            _cancel(reply)
            raise
        except LlamabinError as exc:
            self.console.error(str(exc))
        else:
            self.console.end_line()
            if not reply.text:  # the turn is not kept (roles must alternate): say so, or it vanishes unseen
                self.console.notice("the model answered nothing; your message was not kept")
            elif reply.finish_reason is FinishReason.LENGTH:
                self.console.notice("the answer reached the token limit")
        self.state.last_usage = reply.usage


def _cancel(reply: Reply) -> None:
    """Stop the answer and wait until the conversation has kept the partial
    turn; more Ctrl-C presses meanwhile must not leave it half recorded."""
    while True:
        try:
            reply.cancel()
            return
        except KeyboardInterrupt:
            continue
        except LlamabinError:  # it failed as it stopped: the turn is recorded
            return
