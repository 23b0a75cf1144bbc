"""The chat's slash commands. Each is a plain function of (state, argument);
`builtin_commands` registers them all, once. `/help` is made for the
registry it lists (`help_command`), so the state need not carry one."""

from __future__ import annotations

from pathlib import Path

from chat.conversation import is_transcript, write_private
from chat.errors import LlamabinError
from chat.repl.registry import (
    Command,
    CommandError,
    Registry,
    complete_command_name,
    complete_path,
)
from chat.repl.state import ReplState


def builtin_commands() -> Registry[ReplState]:
    """A fresh registry of every built-in command, in /help order."""
    registry: Registry[ReplState] = Registry()
    for command in [
        help_command(registry),
        Command("exit", _exit, "leave the chat (Ctrl-D too)", aliases=("quit",)),
        Command("clear", _clear, "forget the conversation (the system prompt stays)"),
        Command("undo", _undo, "remove the last question and its answer"),
        Command("system", _system, "show the system prompt, set it, or remove it with -", usage="[TEXT]"),
        Command("context", _context, "how many tokens of the context the conversation fills"),
        Command("stats", _stats, "speed and token counts of the last answer"),
        Command("template", _template, "the chat template and stop strings in use"),
        Command(
            "dump",
            _dump,
            "print the conversation as the model sees it, or write it to FILE",
            usage="[FILE]",
            complete=complete_path,
        ),
        Command("save", _save, "save the conversation to FILE (JSON)", usage="FILE", complete=complete_path),
        Command(
            "load", _load, "replace the conversation with one saved by /save", usage="FILE", complete=complete_path
        ),
    ]:
        registry.add(command)
    return registry


def help_command(registry: Registry[ReplState]) -> Command[ReplState]:
    """`/help` for `registry`: it lists whatever the registry holds when it
    runs, so it may be made before the commands it lists are added."""

    def _help(state: ReplState, arg: str) -> None:
        if arg:
            command = registry.get(arg)
            if command is None:
                raise CommandError(f"no command /{arg.lstrip('/')}: type /help for the list")
            state.say(f"{command.synopsis}  {command.help}{_aliases(command)}")
            return
        width = max(len(c.synopsis) for c in registry)
        state.say("commands:")
        for command in registry:
            state.say(f"  {command.synopsis:<{width}}  {command.help}{_aliases(command)}")
        state.say("a line starting with // sends the rest as a message (it starts with /)")
        if state.keys_help:
            state.say(state.keys_help)

    return Command(
        "help", _help, "list the commands, or describe one", usage="[COMMAND]", complete=complete_command_name
    )


def _aliases(command: Command[ReplState]) -> str:
    if not command.aliases:
        return ""
    return " (also " + ", ".join("/" + a for a in command.aliases) + ")"


def _exit(state: ReplState, _arg: str) -> None:
    state.exit_requested = True


def _clear(state: ReplState, _arg: str) -> None:
    state.conversation.clear()
    state.last_usage = None
    state.say("conversation cleared")


def _undo(state: ReplState, _arg: str) -> None:
    if state.conversation.undo():
        state.say("removed the last exchange")
    else:
        state.say("nothing to undo")


def _system(state: ReplState, arg: str) -> None:
    conv = state.conversation
    if not arg:
        state.say(f"system prompt: {conv.system_prompt}" if conv.system_prompt else "no system prompt")
        return
    conv.system_prompt = None if arg == "-" else arg
    state.say("system prompt removed" if arg == "-" else "system prompt set")


def _context(state: ReplState, _arg: str) -> None:
    conv = state.conversation
    used = conv.tokens_used()
    line = f"context: {used} / {conv.n_ctx} tokens ({len(conv.messages)} messages)"
    # Room for an answer is kept at each turn; an answer cut at the
    # context's end even leaves a conversation longer than the context.
    if conv.drops_at_next_message(used):
        line += "; full: the next message drops the oldest ones"
    state.say(line)


def _stats(state: ReplState, _arg: str) -> None:
    usage = state.last_usage
    if usage is None:
        state.say("no answer yet")
        return
    state.say(
        f"prompt: {usage.prompt_tokens} tokens ({usage.cached_tokens} cached,"
        f" {usage.evaluated_prompt_tokens} evaluated) at {usage.prompt_tokens_per_second:.1f} tokens/s"
    )
    state.say(f"generation: {usage.completion_tokens} tokens at {usage.generation_tokens_per_second:.1f} tokens/s")


def _template(state: ReplState, _arg: str) -> None:
    template = state.conversation.template
    state.say(f"template: {template.name} (from {template.origin})")
    stops = ", ".join(repr(s) for s in template.stop)
    state.say(f"stop strings: {stops or 'none'}")


def _dump(state: ReplState, arg: str) -> None:
    conv = state.conversation
    if not conv.messages and not conv.system_prompt:
        state.say("the conversation is empty")
        return
    text = conv.render(add_generation_prompt=False)
    if not arg:
        state.say(text.rstrip("\n"))
        return
    path = _path(arg)
    if _taken(path):  # a dump has no mark of its own: whatever is there may be the user's
        raise LlamabinError(f"{path} exists: give a new file name")
    try:
        write_private(path, text)
    except OSError as exc:
        raise LlamabinError(f"cannot write {path}: {exc.strerror}") from None
    state.say(f"wrote the rendered conversation to {path}")


def _save(state: ReplState, arg: str) -> None:
    path = _path(arg)
    if _taken(path) and not is_transcript(path):  # saving over an earlier /save is the usual case
        raise LlamabinError(f"{path} exists and is not a saved conversation: give a new file name")
    try:
        state.conversation.save(path)
    except OSError as exc:
        raise LlamabinError(f"cannot write {path}: {exc.strerror}") from None
    state.say(f"saved {len(state.conversation.messages)} messages to {path}")


def _load(state: ReplState, arg: str) -> None:
    path = _path(arg)
    state.conversation.load(path)  # a bad file raises and changes nothing
    state.last_usage = None
    state.say(f"loaded {len(state.conversation.messages)} messages from {path}")


def _path(arg: str) -> Path:
    return Path(arg).expanduser()


def _taken(path: Path) -> bool:
    """A file is there (a link is refused when written, in its own words)."""
    try:
        return path.exists() and not path.is_symlink()
    except OSError as exc:  # a name too long, say: Python 3.11's exists() raises it
        raise LlamabinError(f"cannot write {path}: {exc.strerror}") from None
