"""The command line: parse flags, build Settings, hand over to a front end.

Nothing here talks to the model; `run_repl`, `run_oneshot` do the work.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Sequence

import click

from chat import __version__
from chat.engine.llama import ModelSource
from chat.engine.types import SamplingParams
from chat.errors import EXIT_INTERRUPTED, EXIT_USAGE, LlamabinError, UsageError
from chat.settings import Mode, Settings, default_threads
from templates import BUILTIN_NAMES

MANUAL = """Chat with a local language model, or run it from scripts.

\b
Modes (pick at most one; the default is the chat):
  (none)        terminal chat; type /help inside it
  --chat        the terminal chat alone; -p sets the system prompt
  --cli         one raw completion of -p/-f/stdin, printed to stdout
  --ask TEXT    one chat-templated question, its answer printed to stdout

\b
Examples:
  llamabin -m model.gguf
  llamabin -m model.gguf --chat -p "you are a pirate"
  llamabin -m model.gguf --cli -p 'four score and seven' --log-disable
  echo 'Once upon a time' | llamabin -m model.gguf --cli -n 32
  llamabin -m model.gguf --ask 'What is the capital of France?' --temp 0
  llamabin -m model.gguf --ask 'List three colors' --json

\b
In --cli mode the prompt is used as it is: no chat template is applied, as
in llama.cpp. --ask applies the model's chat template (and --system-prompt)
for you. Only the generated text goes to stdout; diagnostics go to stderr.

\b
Exit codes: 0 success, 1 runtime error (bad model file, out of memory),
2 usage error (bad flag, missing file, empty prompt), 130 interrupted.
"""


def _positive(ctx: click.Context, param: click.Parameter, value: int | None) -> int | None:
    if value is not None and value <= 0:
        raise click.BadParameter("must be a positive number")
    return value


@click.command(
    help=MANUAL,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.option("-m", "--model", type=click.Path(path_type=Path), help="GGUF model file to run.")
@click.option("--chat", "mode", flag_value=Mode.CHAT.value, help="Run the terminal chat alone.")
@click.option("--cli", "mode", flag_value=Mode.CLI.value, help="Print one raw completion and exit.")
@click.option("--ask", metavar="TEXT", help="Ask one templated question ('-' reads stdin) and exit.")
@click.option("-p", "--prompt", metavar="TEXT", help="Prompt for --cli; system prompt for the chat.")
@click.option("--system-prompt", "--system", "system_prompt", metavar="TEXT", help="System prompt for the chat and --ask.")
@click.option("-f", "--file", "prompt_file", metavar="FILE", help="Read the --cli prompt from FILE ('-' for stdin).")
@click.option("-c", "--ctx-size", type=int, help="Context size in tokens [default: 4096, at most the trained size; 0 = trained size].")
@click.option("--ctx-force", is_flag=True, help="Allow a context larger than the model was trained for.")
@click.option("-n", "--n-predict", type=int, default=-1, show_default=True, help="Tokens to generate at most (-1 = until the answer ends).")
@click.option("--temp", type=float, default=0.8, show_default=True, help="Temperature; 0 picks the likeliest token (greedy).")
@click.option("--top-k", type=int, default=40, show_default=True, help="Top-k sampling (0 = off).")
@click.option("--top-p", type=float, default=0.95, show_default=True, help="Top-p (nucleus) sampling (1.0 = off).")
@click.option("--min-p", type=float, default=0.05, show_default=True, help="Min-p sampling (0.0 = off).")
@click.option("--repeat-penalty", type=float, default=1.0, show_default=True, help="Penalty for repeated tokens (1.0 = off).")
@click.option("--repeat-last-n", type=int, default=64, show_default=True, help="How many recent tokens the penalty looks at.")
@click.option("-s", "--seed", type=int, default=-1, show_default=True, help="Random seed (-1 = random).")
@click.option("-t", "--threads", type=int, callback=_positive, help="CPU threads [default: all cores].")
@click.option("-ngl", "--n-gpu-layers", "--gpu-layers", type=int, default=0, show_default=True, help="Layers to offload to a GPU, if this build has one (999 = all).")
@click.option("--template", metavar="NAME|FILE", help="Chat template: alpaca, chatml, gemma, llama3, or a Jinja file [default: the model's own].")
@click.option("--grammar", metavar="GBNF", help="Constrain output to a GBNF grammar.")
@click.option("--grammar-file", metavar="FILE", type=click.Path(path_type=Path, dir_okay=False), help="Read the GBNF grammar from FILE.")
@click.option("-j", "--json", "json_output", is_flag=True, help="Constrain output to a JSON value.")
@click.option("--log-disable", is_flag=True, help="Print no diagnostics on stderr (errors still print).")
@click.option("--verbose", is_flag=True, help="Show llama.cpp's logs and full tracebacks.")
@click.version_option(__version__, "--version", message="llamabin %(version)s")
@click.pass_context
def command(ctx: click.Context, **opts: Any) -> int:
    settings = build_settings(opts)
    ctx.obj = settings
    return dispatch(settings)


def dispatch(settings: Settings) -> int:
    """Run the front end the mode asks for; the imports are here so
    `--help` and bad flags answer without loading llama.cpp."""
    if settings.mode in (Mode.CLI, Mode.ASK):
        from chat.oneshot import run_oneshot

        return run_oneshot(settings)
    from chat.repl import run_repl

    return run_repl(settings)


def build_settings(opts: dict[str, Any]) -> Settings:
    mode = _mode(opts)
    model = opts["model"]
    if model is None:
        raise UsageError("no model given: pass -m MODEL.gguf")
    chat_mode = mode in (Mode.CHAT, Mode.DEFAULT)
    _check_template(opts["template"])
    return Settings(
        mode=mode,
        model=ModelSource(Path(model)),
        n_ctx=opts["ctx_size"],
        ctx_force=opts["ctx_force"],
        n_predict=None if opts["n_predict"] < 0 else opts["n_predict"] or None,
        sampling=_sampling(opts),
        threads=opts["threads"] or default_threads(),
        n_gpu_layers=opts["n_gpu_layers"],
        template=opts["template"],
        system_prompt=opts["system_prompt"] or (opts["prompt"] if chat_mode else None),
        prompt=_one_shot_prompt(mode, opts),
        verbose=opts["verbose"],
        log_disable=opts["log_disable"],
    )


def _check_template(choice: str | None) -> None:
    """Refuse a template that cannot exist before spending time on the model."""
    if choice is not None and choice not in BUILTIN_NAMES and not Path(choice).is_file():
        names = ", ".join(BUILTIN_NAMES)
        raise UsageError(f"unknown template '{choice}': use one of {names}, or a path to a Jinja file")


def _mode(opts: dict[str, Any]) -> Mode:
    if opts["ask"] is not None and opts["mode"] is not None:
        raise UsageError(f"--ask and --{opts['mode']} cannot be used together")
    if opts["ask"] is not None:
        return Mode.ASK
    return Mode(opts["mode"]) if opts["mode"] else Mode.DEFAULT


def _sampling(opts: dict[str, Any]) -> SamplingParams:
    if opts["n_predict"] == 0:
        raise UsageError("-n 0 asks for no tokens at all: give a positive number or -1")
    return SamplingParams(
        temperature=opts["temp"],
        top_k=opts["top_k"],
        top_p=opts["top_p"],
        min_p=opts["min_p"],
        repeat_penalty=opts["repeat_penalty"],
        repeat_last_n=opts["repeat_last_n"],
        seed=None if opts["seed"] < 0 else opts["seed"],
        grammar=_grammar(opts),
    )


def _grammar(opts: dict[str, Any]) -> str | None:
    given = [k for k in ("grammar", "grammar_file", "json_output") if opts[k]]
    if len(given) > 1:
        raise UsageError("use only one of --grammar, --grammar-file and --json")
    if opts["json_output"]:
        from chat.engine.grammars import JSON_GBNF

        return JSON_GBNF
    if opts["grammar_file"]:
        return _read_text(str(opts["grammar_file"]), "grammar file")
    return opts["grammar"] or None


def _one_shot_prompt(mode: Mode, opts: dict[str, Any]) -> str | None:
    if mode is Mode.ASK:
        text = sys.stdin.read() if opts["ask"] == "-" else opts["ask"]
    elif mode is Mode.CLI:
        if opts["prompt"] is not None and opts["prompt_file"]:
            raise UsageError("give the prompt with -p or -f, not both")
        if opts["prompt_file"]:
            text = _read_text(opts["prompt_file"], "prompt file")
        elif opts["prompt"] is not None:
            text = opts["prompt"]
        elif not sys.stdin.isatty():
            text = sys.stdin.read()
        else:
            raise UsageError("--cli needs a prompt: -p TEXT, -f FILE, or text on stdin")
    else:
        return None
    if not text.strip():
        raise UsageError("the prompt is empty")
    return text


def _read_text(name: str, what: str) -> str:
    if name == "-":
        return sys.stdin.read()
    try:
        return Path(name).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{what} not found: {name}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {what} {name}: {exc}") from None


def main(argv: Sequence[str] | None = None, default_map: dict[str, Any] | None = None) -> int:
    """Entry point: run the command, and turn every error into one line and
    an exit code (a traceback only with --verbose)."""
    args = list(sys.argv[1:] if argv is None else argv)
    verbose = "--verbose" in args
    try:
        rv = command.main(args, prog_name="llamabin", standalone_mode=False, default_map=default_map)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.Abort:
        return EXIT_INTERRUPTED
    except click.UsageError as exc:
        _fail(f"{exc.format_message()} (see --help)")
        return EXIT_USAGE
    except LlamabinError as exc:
        if verbose:
            raise
        _fail(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    return int(rv or 0)


def _fail(message: str) -> None:
    click.echo(f"llamabin: error: {message}", err=True)
