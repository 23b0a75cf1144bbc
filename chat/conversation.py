"""A chat: messages, a template, and the engine that answers them.

The REPL and the templated one-shot (`--ask`) both speak through this, so
they render prompts, trim old turns and keep partial answers the same way.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from chat.engine.engine import Engine
from chat.engine.generation import Generation
from chat.engine.types import FinishReason, GenerationRequest, SamplingParams, Usage
from chat.errors import ContextLengthExceededError, LlamabinError
from chat.prompts import chat_prompt
from chat.session import Session

if TYPE_CHECKING:
    from templates import ChatTemplate

ROLES = ("system", "user", "assistant")


@dataclass
class Message:
    role: str
    content: str


class Reply:
    """One streamed answer. Iterate it for text; the assistant message is
    added to the conversation when it ends, or when it is cancelled (the
    partial answer is kept)."""

    def __init__(self, conversation: Conversation, generation: Generation, notice: str | None) -> None:
        self._conv = conversation
        self._gen = generation
        self.notice = notice  # set when old turns were dropped to make room
        self.text = ""
        self.usage: Usage | None = None
        self.finish_reason: FinishReason | None = None
        self._draining = False  # cancelled: what still arrives was never shown, so it is not kept

    def __iter__(self) -> Iterator[str]:
        for chunk in self._gen:
            if chunk.text and not self._draining:
                self.text += chunk.text
                yield chunk.text
            if chunk.finish_reason is not None:
                self._end(chunk.finish_reason, chunk.usage)
                chunk.raise_error()

    def cancel(self) -> None:
        """Stop generating and keep what was said so far."""
        self._gen.cancel()
        self._draining = True
        for _ in self:  # drain to the final chunk, which commits the turn
            pass
        final = self._gen.final
        if self.finish_reason is None and final is not None:  # an interrupt took the final chunk
            self._end(final.finish_reason or FinishReason.CANCELLED, final.usage)

    def _end(self, reason: FinishReason, usage: Usage | None) -> None:
        self.finish_reason = reason
        self.usage = usage
        if self.text:
            self._conv.messages.append(Message("assistant", self.text))
        elif self._conv.messages and self._conv.messages[-1].role == "user":
            # Nothing was said (cancelled at once, or an error): the turn
            # did not happen, and roles must keep alternating.
            self._conv.messages.pop()


@dataclass(frozen=True)
class ConversationOptions:
    """How the chat and `--ask` talk: the system prompt, and the sampling
    and length every answer uses unless a command changes them."""

    system_prompt: str | None = None
    sampling: SamplingParams = field(default_factory=SamplingParams)
    max_tokens: int | None = None  # None: until the answer ends or the context is full

    def start(self, session: Session) -> Conversation:
        """A new, empty conversation over the session's engine and template."""
        return Conversation(
            session.engine, session.template, self.system_prompt, sampling=self.sampling, max_tokens=self.max_tokens
        )


class Conversation:
    def __init__(
        self,
        engine: Engine,
        template: ChatTemplate,
        system_prompt: str | None = None,
        sampling: SamplingParams | None = None,
        max_tokens: int | None = None,
    ) -> None:
        self.engine = engine
        self.template = template
        self.system_prompt = system_prompt or None
        self.sampling = sampling or SamplingParams()
        self.max_tokens = max_tokens
        self.messages: list[Message] = []
        self.last_prompt = ""  # the text of the last prompt, template applied

    # -- what a prompt is made of --------------------------------------------

    def _all_messages(self, extra: list[Message] | None = None) -> list[dict[str, str]]:
        msgs = [Message("system", self.system_prompt)] if self.system_prompt else []
        return [asdict(m) for m in msgs + self.messages + (extra or [])]

    def render(self, add_generation_prompt: bool = True) -> str:
        return self.template.render(self._all_messages(), add_generation_prompt)

    def _tokens(self, add_generation_prompt: bool = True) -> list[int]:
        """The prompt's tokens, messages as plain text (chat.prompts)."""
        prompt = chat_prompt(self.template, self._all_messages(), add_generation_prompt, self.engine.special_texts())
        return self.engine.tokenize(prompt) if isinstance(prompt, str) else self.engine.tokenize_parts(prompt)

    def tokens_used(self) -> int:
        """Tokens the conversation so far takes in the context."""
        if not self.messages and not self.system_prompt:
            return 0
        return len(self._tokens(add_generation_prompt=False))

    def drops_at_next_message(self, used: int) -> bool:
        """Whether a conversation of `used` tokens leaves no room for the
        next message's answer, so the next message drops the oldest turns."""
        return bool(self.messages) and used + self._answer_room() > self.n_ctx

    @property
    def n_ctx(self) -> int:
        return self.engine.n_ctx

    def _answer_room(self) -> int:
        room = self.max_tokens if self.max_tokens is not None else 512
        return min(room, self.n_ctx // 4)

    # -- turns -----------------------------------------------------------------

    def ask(self, text: str) -> Reply:
        """Add a user message and start answering it; if it cannot start
        (too long, a template error, Ctrl-C) the conversation is unchanged."""
        before = list(self.messages)
        self.messages.append(Message("user", text))
        try:
            tokens, dropped = self._fit()
            gen = self.engine.submit(self._request(tokens))
        except BaseException:
            self.messages = before  # _fit may have dropped turns for a message that never fit
            raise
        notice = None
        if dropped:
            notice = f"context full: dropped the oldest {dropped} message(s) to make room"
        return Reply(self, gen, notice)

    def _request(self, tokens: list[int]) -> GenerationRequest:
        return GenerationRequest(
            prompt=tokens, sampling=self.sampling, max_tokens=self.max_tokens, stop=self.template.stop
        )

    def _fit(self) -> tuple[list[int], int]:
        """Render the prompt, dropping the oldest turns (never the system
        prompt or the new message) until it and room for an answer fit.

        Whole exchanges go, so roles keep alternating. The first history
        that fits is found by bisection over where it may start: dropping
        one exchange at a time re-rendered and re-tokenized everything for
        each, minutes after /load of a long transcript."""
        history = self.messages
        starts = [0] + [i for i in range(1, len(history)) if history[i].role == "user"]

        def attempt(start: int) -> list[int]:
            self.messages = history[start:]
            self.last_prompt = self.render()
            return self._tokens()

        def fits(tokens: list[int]) -> bool:
            return len(tokens) + self._answer_room() <= self.n_ctx

        tokens = attempt(0)
        if fits(tokens):
            return tokens, 0
        lo, hi, best = 1, len(starts) - 1, None  # a later start never renders longer
        while lo <= hi:
            mid = (lo + hi) // 2
            if fits(attempt(starts[mid])):
                best, hi = mid, mid - 1
            else:
                lo = mid + 1
        if best is not None:
            return attempt(starts[best]), starts[best]
        # Not even the new message alone leaves room for a whole answer: it
        # is sent if it fits at all.
        tokens = attempt(starts[-1])
        if len(tokens) < self.n_ctx:
            return tokens, starts[-1]
        raise ContextLengthExceededError(len(tokens), self.n_ctx)

    def undo(self) -> bool:
        """Remove the last exchange (user message and its answer)."""
        if not self.messages:
            return False
        if self.messages[-1].role == "assistant":
            self.messages.pop()
        if self.messages and self.messages[-1].role == "user":
            self.messages.pop()
        return True

    def clear(self) -> None:
        self.messages.clear()

    # -- transcripts -----------------------------------------------------------

    def to_json(self) -> str:
        doc = {"system_prompt": self.system_prompt, "messages": [asdict(m) for m in self.messages]}
        return json.dumps(doc, ensure_ascii=False, indent=2)

    def save(self, path: Path) -> None:
        write_private(path, self.to_json() + "\n")

    def load(self, path: Path) -> None:
        """Replace this conversation with a saved transcript; on a bad file
        raise and change nothing."""
        not_ours = LlamabinError(f"{path} is not a llamabin transcript")
        try:
            info = path.stat()
            if not stat.S_ISREG(info.st_mode):  # a FIFO would block the read, a device never end
                raise LlamabinError(f"{path} is not a regular file")
            if info.st_size > MAX_TRANSCRIPT_BYTES:
                raise not_ours
            doc = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise LlamabinError(f"cannot read {path}: {exc.strerror}") from exc
        except (ValueError, RecursionError):
            raise not_ours from None
        if not isinstance(doc, dict) or not isinstance(doc.get("messages"), list):
            raise not_ours
        msgs = []
        for m in doc["messages"]:
            if not (isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)):
                raise LlamabinError(f"{path} has a message that is not a role and a text")
            msgs.append(Message(m["role"], m["content"]))
        system = doc.get("system_prompt")
        if system is not None and not isinstance(system, str):
            raise LlamabinError(f"{path} has a system_prompt that is not a text")
        bad = [m.role for m in msgs if m.role not in ("user", "assistant")]
        if bad:
            raise LlamabinError(f"{path} has an unknown role {bad[0]!r}")
        self.messages = msgs
        self.system_prompt = system or None


MAX_TRANSCRIPT_BYTES = 256 * 1024 * 1024


def is_transcript(path: Path) -> bool:
    """Whether `path` holds a conversation saved by /save (a regular file:
    a FIFO would block the read)."""
    try:
        if not path.is_file() or path.stat().st_size > MAX_TRANSCRIPT_BYTES:
            return False
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(doc, dict) and isinstance(doc.get("messages"), list) and "system_prompt" in doc


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path` readable by its owner only (0600, whatever the
    umask), atomically: a private temporary file with an unguessable name
    beside it, synced, then renamed over it, so no one can plant a file or
    a link in its place and a crash never leaves half a transcript.

    A symbolic link at `path` is refused rather than written through (it
    could point anywhere) or replaced (it may be one the user made);
    OSError for everything the disk can say."""
    if path.is_symlink():
        raise LlamabinError(f"{path} is a symbolic link: give the path of a regular file")
    # A short prefix: a name near the 255-byte limit must leave room for
    # the temporary name's own part.
    short = path.name.encode()[:64].decode(errors="ignore")  # bytes count against the limit, not characters
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{short}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # replaces a link planted since the check, never follows it
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
