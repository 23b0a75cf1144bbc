"""The command line: parse flags, build Settings, hand over to a front end.

Nothing here talks to the model: `run_repl`, `run_completion`, `run_ask`
and `serve` do the work, each given only its own options.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

from chat import __version__, phases
from chat.bundle import Bundle, find_bundle
from chat.engine.llama import LoraAdapter, ModelSource
from chat.engine.lookup import DEFAULT_DRAFT_MAX
from chat.engine.rpc import DEFAULT_WORKER_PORT, Endpoint, parse_endpoints
from chat.engine.types import SAMPLING_LIMITS, SamplingParams
from chat.errors import EXIT_INTERRUPTED, EXIT_USAGE, LlamabinError, OutputError, UsageError
from chat.loading import EngineLoad
from chat.oneshot import OneShotOptions, run_ask, run_completion
from chat.rpcworker import WorkerOptions
from chat.server.listen import listen, listen_beside_chat
from chat.server.settings import (
    DEFAULT_HOST,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_PORT,
    DEFAULT_REQUEST_TIMEOUT,
    OLLAMA_PORT,
)
from chat.settings import Mode, Settings, default_threads
from chat.startup import check_bundle, describe_bundle, verify_bundle
from chat.unread_flags import check_unread_flags
from payload.find import sidecar_path
from payload.flags import BAKED_FLAGS
from templates import BUILTIN_NAMES

MANUAL = """Chat with a local language model, or run it from scripts.

\b
Modes (pick at most one; the default is the chat):
  (none)        terminal chat; type /help inside it; the server runs beside it
  --server      the server alone: OpenAI-compatible API and a web chat page
  --chat        the terminal chat alone; -p sets the system prompt
  --cli         one raw completion of -p/-f/stdin, printed to stdout
  --ask TEXT    one chat-templated question, its answer printed to stdout
  --rpc-worker  lend this machine's CPU to a main process run with --rpc

\b
Examples:
  llamabin -m model.gguf
  llamabin -m model.gguf --chat -p "you are a pirate"
  llamabin -m model.gguf --cli -p 'four score and seven' --log-disable
  echo 'Once upon a time' | llamabin -m model.gguf --cli -n 32
  llamabin -m model.gguf --ask 'What is the capital of France?' --temp 0
  llamabin -m model.gguf --ask 'List three colors' --json
  llamabin -m model.gguf --server --port 8080 --nobrowser
  llamabin --rpc-worker --port 50052                  (on each helper machine)
  llamabin -m model.gguf --rpc 10.0.0.2:50052,10.0.0.3:50052 --cli -p 'Hello'

\b
In --cli mode the prompt is used as it is: no chat template is applied, as
in llama.cpp. --ask applies the model's chat template (and --system-prompt)
for you. Only the generated text goes to stdout; diagnostics go to stderr.

\b
The server (--server, and beside the default chat) listens on
http://127.0.0.1:8080: the web chat is at /, the OpenAI API under /v1
(chat/completions with tool calls and logprobs, completions, models,
embeddings), Ollama's under /api (chat, generate, embed, tags, show, ps,
version), llama.cpp's endpoints at /completion, /tokenize, /detokenize,
/health, /props and /metrics. When the port is taken, --server stops with
exit code 1 and the default mode runs the chat alone; --port 0 picks a free
port and prints it. --ollama-port 11434 also serves on Ollama's own port,
for apps that cannot be told another.

\b
--rpc spreads the model's layers over other machines running --rpc-worker
(llama.cpp's RPC backend), as if they were GPUs: -ngl (all layers by default
with --rpc) and --tensor-split say how many go where. The RPC protocol has
no authentication: a worker listens on 127.0.0.1 unless --host says
otherwise; reach it through an SSH tunnel or a private network.

\b
Exit codes: 0 success, 1 runtime error (bad model file, out of memory),
2 usage error (bad flag, missing file, empty prompt), 130 interrupted.
"""


SERVER_SLOTS = 4
ALL_LAYERS = 999
# The flags' defaults are the engine's own: declared once, in SamplingParams.
SAMPLING = SamplingParams()


MAX_SLOTS = 256  # llama.cpp's limit on sequences in one context (LLAMA_MAX_SEQ)
MAX_THREADS = 512  # ggml's (GGML_MAX_N_THREADS): past it llama.cpp crashes rather than refuse


def _in_limits(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    """A sampling flag within the engine's limits for it (SAMPLING_LIMITS),
    NaN and infinities refused."""
    low, high = SAMPLING_LIMITS["temperature" if param.name == "temp" else str(param.name)]
    if value is not None and not (math.isfinite(value) and low <= value <= high):
        raise click.BadParameter(f"must be between {_number(low)} and {_number(high)}")
    return value


def _number(x: float) -> str:
    return str(int(x)) if x == int(x) else f"{x:g}"


def _within(low: int, high: int | None = None) -> Callable[[click.Context, click.Parameter, int | None], int | None]:
    """A check that an integer flag is in [low, high], with no range cluttering --help."""

    def check(ctx: click.Context, param: click.Parameter, value: int | None) -> int | None:
        if value is not None and (value < low or (high is not None and value > high)):
            raise click.BadParameter(f"must be at least {low}" if high is None else f"must be between {low} and {high}")
        return value

    return check


def _text(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Text from the command line must be UTF-8: other bytes reach Python as
    lone surrogates, which no tokenizer or HTTP header can take."""
    if value is None:
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = value[exc.start].encode("utf-8", "surrogateescape")
        raise click.BadParameter(f"is not UTF-8 text (byte 0x{bad.hex()} at character {exc.start})") from None
    return value


def _read_stdin() -> str:
    # Bytes, decoded here: how sys.stdin decodes depends on the locale
    # (strict under en_US.UTF-8, surrogates under C.UTF-8).
    data = sys.stdin.buffer.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad = data[exc.start : exc.start + 1].hex()
        raise UsageError(f"standard input is not UTF-8 text (byte 0x{bad} at offset {exc.start})") from None


@click.command(
    help=MANUAL,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100, "show_default": True},
)
@click.option("-m", "--model", type=click.Path(path_type=Path), help="GGUF model file to run.")
@click.option("--chat", "chat_mode", is_flag=True, help="Run the terminal chat alone.")
@click.option("--cli", "cli_mode", is_flag=True, help="Print one raw completion and exit.")
@click.option("--server", "server_mode", is_flag=True, help="Run the HTTP server alone.")
@click.option(
    "--rpc-worker",
    "rpc_worker_mode",
    is_flag=True,
    help=f"Serve this machine's CPU to a main process's --rpc on --host:--port [default port: {DEFAULT_WORKER_PORT}]; loads no model.",
)
@click.option(
    "--rpc",
    metavar="HOST:PORT[,...]",
    help="Offload layers to these --rpc-worker processes (llama.cpp's RPC backend).",
)
@click.option(
    "-ts",
    "--tensor-split",
    metavar="N0,N1,...",
    help="How to split the offloaded layers over the devices (--rpc workers, GPUs), as proportions [default: by free memory].",
)
@click.option("--ask", metavar="TEXT", callback=_text, help="Ask one templated question ('-' reads stdin) and exit.")
@click.option("-p", "--prompt", metavar="TEXT", callback=_text, help="Prompt for --cli; system prompt for the chat.")
@click.option(
    "--system-prompt",
    "--system",
    "system_prompt",
    metavar="TEXT",
    callback=_text,
    help="System prompt for the chat and --ask.",
)
@click.option("-f", "--file", "prompt_file", metavar="FILE", help="Read the --cli prompt from FILE ('-' for stdin).")
@click.option(
    "-c",
    "--ctx-size",
    type=int,
    callback=_within(0),
    help="Context size in tokens [default: 4096, at most the trained size; 0 = trained size].",
)
@click.option("--ctx-force", is_flag=True, help="Allow a context larger than the model was trained for.")
@click.option(
    "-n",
    "--n-predict",
    type=int,
    callback=_within(-2),
    default=-1,
    show_default=True,
    help="Tokens to generate at most (-1 = until the answer ends).",
)
@click.option(
    "--temp",
    type=float,
    callback=_in_limits,
    default=SAMPLING.temperature,
    show_default=True,
    help="Temperature; 0 picks the likeliest token (greedy).",
)
@click.option(
    "--top-k",
    type=int,
    callback=_in_limits,
    default=SAMPLING.top_k,
    show_default=True,
    help="Top-k sampling (0 = off).",
)
@click.option(
    "--top-p",
    type=float,
    callback=_in_limits,
    default=SAMPLING.top_p,
    show_default=True,
    help="Top-p (nucleus) sampling (1.0 = off).",
)
@click.option(
    "--min-p",
    type=float,
    callback=_in_limits,
    default=SAMPLING.min_p,
    show_default=True,
    help="Min-p sampling (0.0 = off).",
)
@click.option(
    "--repeat-penalty",
    type=float,
    callback=_in_limits,
    default=SAMPLING.repeat_penalty,
    show_default=True,
    help="Penalty for repeated tokens (1.0 = off).",
)
@click.option(
    "--repeat-last-n",
    type=int,
    callback=_in_limits,
    default=SAMPLING.repeat_last_n,
    show_default=True,
    help="How many recent tokens the penalty looks at (-1: the whole context, 0: none).",
)
@click.option(
    "-s",
    "--seed",
    type=int,
    callback=_within(-1, 2**32 - 1),
    default=-1,
    show_default=True,
    help="Random seed (-1 = random, as is 4294967295, llama.cpp's LLAMA_DEFAULT_SEED).",
)
@click.option("-t", "--threads", type=int, callback=_within(1, MAX_THREADS), help="CPU threads [default: all cores].")
@click.option(
    "--draft-max",
    type=click.IntRange(0, 64),
    metavar="N",
    default=DEFAULT_DRAFT_MAX,
    show_default=True,
    help="Tokens guessed ahead from the prompt and the answer so far (prompt lookup) when one answer runs alone: answers that quote their input come faster, with the same text. 0 turns it off.",
)
@click.option(
    "-cram",
    "--cache-ram",
    type=click.IntRange(-1),
    metavar="MiB",
    help="Memory for prompts kept after their slot moves on to another request, so a conversation or a long system prompt that comes back is not evaluated again, as llama-server's --cache-ram. -1: no limit, 0: off [default: 8192, or a quarter of this machine's memory if less].",
)
@click.option(
    "-np",
    "--parallel",
    type=int,
    callback=_within(1, MAX_SLOTS),
    help="Requests the server decodes together [default: 4 with the server, else 1]. Given explicitly, each gets -c / N tokens of its own, as in llama-server; else they share -c (see -kvu).",
)
@click.option(
    "-kvu",
    "--kv-unified",
    is_flag=True,
    help="One KV cache that all -np slots share, so one request may use all of -c [default: on unless -np is given].",
)
@click.option(
    "--lora",
    "lora",
    multiple=True,
    metavar="FILE",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Apply a LoRA adapter GGUF at run time (repeatable), as llama.cpp's --lora.",
)
@click.option(
    "--lora-scaled",
    "lora_scaled",
    multiple=True,
    nargs=2,
    metavar="FILE SCALE",
    type=(click.Path(path_type=Path, dir_okay=False), float),
    help="Apply a LoRA adapter at SCALE times its strength (repeatable).",
)
@click.option(
    "-ngl",
    "--n-gpu-layers",
    "--gpu-layers",
    type=int,
    callback=_within(0),
    help="Layers to offload to a GPU or --rpc workers (999 = all) [default: 0; all with --rpc].",
)
@click.option(
    "--template",
    metavar="NAME|FILE",
    help="Chat template: alpaca, chatml, gemma, llama3, or a Jinja file [default: the model's own].",
)
@click.option("--grammar", metavar="GBNF", callback=_text, help="Constrain output to a GBNF grammar.")
@click.option(
    "--grammar-file",
    metavar="FILE",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Read the GBNF grammar from FILE.",
)
@click.option("-j", "--json", "json_output", is_flag=True, help="Constrain output to a JSON value.")
@click.option("--log-disable", is_flag=True, help="Print no diagnostics on stderr (errors still print).")
@click.option("--verbose", is_flag=True, help="Show llama.cpp's logs and full tracebacks.")
@click.option("--host", default=DEFAULT_HOST, help="Address the server listens on (0.0.0.0: every interface).")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    help=f"Port the server listens on (0: any free one) [default: {DEFAULT_PORT}; {DEFAULT_WORKER_PORT} with --rpc-worker].",
)
@click.option(
    "--ollama-port",
    type=click.IntRange(1, 65535),
    metavar="PORT",
    help=f"Also serve on PORT, for Ollama clients that cannot be pointed elsewhere ({OLLAMA_PORT} is Ollama's).",
)
@click.option("--nobrowser", is_flag=True, help="Do not open the web chat in a browser.")
@click.option("--api-key", metavar="KEY", callback=_text, help="Require 'Authorization: Bearer KEY' on API calls.")
@click.option("--api-key-file", metavar="FILE", help="Read the API key from the first line of FILE.")
@click.option(
    "--allowed-host",
    "allowed_hosts",
    metavar="NAME",
    multiple=True,
    help="Also answer requests whose Host (or Origin) is NAME, as when the server sits behind a proxy or a DNS name (repeatable) [default: localhost, IP addresses and this machine's name].",
)
@click.option(
    "--cors-origin",
    "cors_origins",
    metavar="ORIGIN",
    multiple=True,
    help="Let web pages from ORIGIN (e.g. https://app.example) call the API from a browser (repeatable) [default: none].",
)
@click.option(
    "--max-connections",
    type=click.IntRange(1, 65536),
    default=DEFAULT_MAX_CONNECTIONS,
    show_default=True,
    help="Connections the server holds at once; more are refused with 503.",
)
@click.option(
    "--request-timeout",
    type=click.FloatRange(0.1, 3600),
    default=DEFAULT_REQUEST_TIMEOUT,
    show_default=True,
    help="Seconds a client may take to send its request; then 408.",
)
@click.option(
    "--verbose-prompt", is_flag=True, help="Print the prompt as the model sees it (chat template applied) on stderr."
)
@click.option("--doctor", is_flag=True, help="Print what to check when something does not work, and exit.")
@click.option("--verify", is_flag=True, help="Check the built-in weights' sha256 and exit.")
@click.version_option(__version__, "--version", message="llamabin %(version)s")
@click.pass_context
def command(ctx: click.Context, **opts: Any) -> int:
    bundle: Bundle | None = ctx.obj
    if opts["verify"]:
        return verify_bundle(bundle, opts["log_disable"])
    if opts["rpc_worker_mode"]:
        from chat.rpcworker import run_worker

        return run_worker(worker_options(opts))
    typed = frozenset(name for name in opts if ctx.get_parameter_source(name) is click.core.ParameterSource.COMMANDLINE)
    settings = build_settings(opts, bundle, typed)
    if opts["doctor"]:
        from chat.doctor import run_doctor

        return run_doctor(settings.engine_config(), settings.template_choice(), bundle)
    if bundle is not None and settings.model == bundle.source:
        check_bundle(bundle, settings.log_disable)
    return dispatch(settings)


def dispatch(settings: Settings) -> int:
    """Run the front end the mode asks for, giving it only what it needs.
    The port is bound first, so a taken one is reported at once; then the
    model loads in a thread while the front end is imported here (not at
    the top, so `--help` and bad flags answer at once)."""
    phases.mark(phases.COMMAND_LINE)
    if settings.mode in (Mode.CLI, Mode.ASK):
        assert settings.prompt is not None
        options = OneShotOptions(
            settings.prompt, settings.conversation_options(), settings.verbose_prompt, notices=not settings.log_disable
        )
        with EngineLoad(settings) as load:
            if settings.mode is Mode.CLI:  # a raw completion: no template is resolved
                status = run_completion(load.engine(), options)
            else:
                status = run_ask(load.session(), options)
            phases.mark(phases.ANSWERED)
            return status
    server = settings.server_settings()
    if settings.mode is Mode.SERVER:
        with listen(server) as listeners, EngineLoad(settings, imports_beside=True) as load:
            from chat.server.run import serve

            phases.mark(phases.FRONT_END_IMPORTED)
            return serve(load.session, server, listeners.sockets, announce=not settings.log_disable)
    beside = listen_beside_chat(server) if settings.mode is Mode.DEFAULT else None
    with EngineLoad(settings, imports_beside=True) as load:
        from chat.repl import run_repl

        phases.mark(phases.FRONT_END_IMPORTED)
        session = load.session()
        chat = settings.conversation_options()
        if beside is None:
            return run_repl(session, chat, settings.history_file, settings.verbose)
        from chat.server.run import beside_the_chat

        # The server runs on the chat's engine while the chat runs, and
        # stops when it ends; neither front end knows of the other.
        with beside, beside_the_chat(session, server, beside.sockets):
            return run_repl(session, chat, settings.history_file, settings.verbose)


def worker_options(opts: dict[str, Any]) -> WorkerOptions:
    """An RPC worker's few settings; the flags that only mean something
    with a model are refused rather than ignored."""
    _mode(opts)  # --rpc-worker with another mode is refused there
    for name in ("model", "rpc", "prompt", "doctor"):
        if opts[name]:
            raise UsageError(f"--rpc-worker loads no model: --{name} cannot be used with it")
    port = DEFAULT_WORKER_PORT if opts["port"] is None else opts["port"]
    if port == 0:
        raise UsageError("--rpc-worker needs a fixed --port: main processes name it in --rpc")
    threads = opts["threads"] or default_threads()
    return WorkerOptions(opts["host"], port, threads, announce=not opts["log_disable"], verbose=opts["verbose"])


def build_settings(opts: dict[str, Any], bundle: Bundle | None = None, typed: frozenset[str] = frozenset()) -> Settings:
    """The settings `opts` ask for; `typed` names the options given on the
    command line (the others are defaults, some built into the file)."""
    mode = _mode(opts)
    check_unread_flags(mode, opts, typed)
    if opts["model"] is not None:
        model = ModelSource(Path(opts["model"]))
    elif bundle is not None:
        model = bundle.source
    elif getattr(sys, "frozen", False):
        side = sidecar_path(Path(sys.executable))
        raise UsageError(f"this file's weights are missing: put {side.name} next to it, or pass -m MODEL.gguf")
    else:
        raise UsageError("no model given: pass -m MODEL.gguf")
    chat_mode = mode in (Mode.CHAT, Mode.DEFAULT)
    _check_template(opts["template"])
    rpc = parse_endpoints(opts["rpc"]) if opts["rpc"] is not None else ()
    if opts["ollama_port"] is not None and opts["ollama_port"] == (
        DEFAULT_PORT if opts["port"] is None else opts["port"]
    ):
        raise UsageError(f"--ollama-port {opts['ollama_port']} is the server's --port already: give another one")
    return Settings(
        mode=mode,
        model=model,
        n_ctx=opts["ctx_size"],
        ctx_force=opts["ctx_force"],
        n_predict=None if opts["n_predict"] < 0 else opts["n_predict"] or None,
        sampling=_sampling(opts),
        threads=opts["threads"] or default_threads(),
        draft_max=opts["draft_max"],
        cache_ram_mib=opts["cache_ram"],
        lora=_builtin_lora(bundle, model) + _loras(opts),
        n_gpu_layers=_gpu_layers(opts, rpc),
        rpc=rpc,
        tensor_split=_tensor_split(opts["tensor_split"]),
        parallel=opts["parallel"] or (SERVER_SLOTS if mode in (Mode.DEFAULT, Mode.SERVER) else 1),
        # llama.cpp's rule: shared when the slot count is automatic.
        kv_unified=opts["kv_unified"] or not opts["parallel"],
        template=opts["template"],
        baked_template=bundle.chat_template if bundle and model == bundle.source else None,
        # In the chat, -p is the system prompt (llamafile's usage); typed, it
        # beats one built into the file, as every typed flag does.
        system_prompt=opts["prompt"] if chat_mode and opts["prompt"] is not None else opts["system_prompt"],
        prompt=_one_shot_prompt(mode, opts),
        verbose=opts["verbose"],
        log_disable=opts["log_disable"],
        verbose_prompt=opts["verbose_prompt"],
        host=opts["host"],
        port=DEFAULT_PORT if opts["port"] is None else opts["port"],
        ollama_port=opts["ollama_port"],
        api_key=_api_key(opts),
        allowed_hosts=tuple(opts["allowed_hosts"]),
        cors_origins=tuple(_origin(o) for o in opts["cors_origins"]),
        max_connections=opts["max_connections"],
        request_timeout=opts["request_timeout"],
        open_browser=not opts["nobrowser"],
    )


def _gpu_layers(opts: dict[str, Any], rpc: tuple[Endpoint, ...]) -> int:
    """-ngl as given; without it, every layer when there are workers to
    take them (llama.cpp's own default, where it can offload), else none."""
    if opts["n_gpu_layers"] is not None:
        return int(opts["n_gpu_layers"])
    return ALL_LAYERS if rpc else 0


def _tensor_split(text: str | None) -> tuple[float, ...]:
    if text is None:
        return ()
    try:
        parts = tuple(float(p) for p in text.replace("/", ",").split(","))
    except ValueError:
        parts = ()
    if not parts or any(p < 0 for p in parts) or sum(parts) <= 0:
        raise UsageError(f"--tensor-split {text!r}: give proportions such as 3,1 (one per device)")
    return parts


def _builtin_lora(bundle: Bundle | None, model: ModelSource) -> tuple[LoraAdapter, ...]:
    """The adapter packed beside this file's weights, applied to them (not
    to a model given with -m)."""
    if bundle is None or model != bundle.source or bundle.lora is None:
        return ()
    return (bundle.lora,)


def _loras(opts: dict[str, Any]) -> tuple[LoraAdapter, ...]:
    adapters = [LoraAdapter(path) for path in opts["lora"]]
    adapters += [LoraAdapter(path, scale) for path, scale in opts["lora_scaled"]]
    for adapter in adapters:
        if not math.isfinite(adapter.scale):  # NaN would turn every weight it touches into NaN
            raise UsageError(f"--lora-scaled {adapter.path} {adapter.scale}: the scale must be a finite number")
        if not adapter.path.is_file():
            raise UsageError(f"LoRA adapter not found: {adapter.path}")
    return tuple(adapters)


def _api_key(opts: dict[str, Any]) -> str | None:
    if opts["api_key"] is not None and opts["api_key_file"]:
        raise UsageError("give the API key with --api-key or --api-key-file, not both")
    key = opts["api_key"]
    if opts["api_key_file"]:
        lines = _read_text(opts["api_key_file"], "API key file").splitlines()
        key = lines[0] if lines else ""
    if key is not None and not key.strip():
        raise UsageError("the API key is empty")
    return key.strip() if key is not None else None


def _origin(text: str) -> str:
    """A browser origin as browsers send it: scheme://host[:port], nothing else."""
    from urllib.parse import urlsplit

    parts = urlsplit(text.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/") or parts.query:
        raise UsageError(f"--cors-origin {text!r}: give an origin such as https://app.example:3000")
    return f"{parts.scheme}://{parts.netloc.lower()}"


def _check_template(choice: str | None) -> None:
    """Refuse a template that cannot exist before spending time on the model."""
    if choice is not None and choice not in BUILTIN_NAMES and not Path(choice).is_file():
        names = ", ".join(BUILTIN_NAMES)
        raise UsageError(f"unknown template '{choice}': use one of {names}, or a path to a Jinja file")


def _mode(opts: dict[str, Any]) -> Mode:
    """One mode at most: two are refused rather than one silently winning."""
    chosen = [
        m for m in (Mode.CHAT, Mode.CLI, Mode.SERVER, Mode.RPC_WORKER) if opts[f"{m.value.replace('-', '_')}_mode"]
    ]
    if opts["ask"] is not None:
        chosen.append(Mode.ASK)
    if len(chosen) > 1:
        raise UsageError(" and ".join(f"--{m.value}" for m in chosen) + " cannot be used together")
    return chosen[0] if chosen else Mode.DEFAULT


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
        seed=None if opts["seed"] in (-1, 2**32 - 1) else opts["seed"],  # both mean "random" in llama.cpp
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
    if opts["grammar"] is not None and not opts["grammar"].strip():
        raise UsageError("the grammar is empty: give GBNF rules, starting with root ::= ...")
    return opts["grammar"] or None


def _one_shot_prompt(mode: Mode, opts: dict[str, Any]) -> str | None:
    if mode is Mode.ASK:
        text = _read_stdin() if opts["ask"] == "-" else opts["ask"]
    elif mode is Mode.CLI:
        if opts["prompt"] is not None and opts["prompt_file"] is not None:
            raise UsageError("give the prompt with -p or -f, not both")
        if opts["prompt_file"] == "":
            raise UsageError("-f needs a file name ('-' reads stdin)")
        if opts["prompt_file"]:
            text = _read_text(opts["prompt_file"], "prompt file")
        elif opts["prompt"] is not None:
            text = opts["prompt"]
        elif not sys.stdin.isatty():
            text = _read_stdin()
        else:
            raise UsageError("--cli needs a prompt: -p TEXT, -f FILE, or text on stdin")
    else:
        return None
    if not text.strip():
        raise UsageError("the prompt is empty")
    return text


def _read_text(name: str, what: str) -> str:
    if name == "-":
        return _read_stdin()
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
    # A stream the shell closed (<&-, >&-, 2>&-) is None in Python: a closed
    # input reads as empty, and closed output has nowhere to put an answer.
    if sys.stderr is None:
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 (for the life of the process)
    if sys.stdin is None:
        sys.stdin = open(os.devnull)  # noqa: SIM115
    if sys.stdout is None:
        # The server and the worker print nothing there a caller needs (a
        # daemon may run them so); the other modes' answers would be lost.
        # Modes cannot be built into a file, so the command line tells.
        if not {"--server", "--rpc-worker"} & set(args):
            _fail("standard output is closed: redirect it (>/dev/null discards what is printed)")
            return EXIT_USAGE
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115
    try:
        bundle = find_bundle()
        if bundle is not None and default_map is None and not _names_a_model(args):
            default_map = baked_defaults(bundle)
            if _asks_for_help(args):
                click.echo(describe_bundle(bundle) + "\n")
        rv = command.main(args, prog_name=_prog_name(), standalone_mode=False, default_map=default_map, obj=bundle)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.Abort:
        return EXIT_INTERRUPTED
    except click.UsageError as exc:
        _fail(f"{exc.format_message()} (see --help)")
        return EXIT_USAGE
    except OutputError as exc:
        _discard_stdout()  # or Python's last flush at exit fails again, with a traceback
        if not exc.broken_pipe:  # a reader that stopped reading (| head) is not an error to report
            _fail(str(exc))
        return exc.exit_code
    except LlamabinError as exc:
        if verbose:
            raise
        _fail(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    return int(rv or 0)


def baked_defaults(bundle: Bundle) -> dict[str, Any]:
    """The file's baked flags as click defaults: the command line beats them,
    and --help shows them. Flags a file may not carry are dropped, with one
    warning: a file from anyone must not pick, say, where the server listens."""
    baked = bundle.baked
    try:
        ctx = command.make_context(_prog_name(), list(baked.allowed), resilient_parsing=False)
    except click.ClickException as exc:
        raise LlamabinError(f"this file's built-in defaults are invalid: {exc.format_message()}") from None
    given = click.core.ParameterSource.COMMANDLINE
    chosen = {k: v for k, v in ctx.params.items() if ctx.get_parameter_source(k) is given}
    # Checked again on what click made of them, in case the two readings differ.
    stray = sorted(set(chosen) - _bakeable_params())
    refused = baked.refused + [f"--{name.replace('_', '-')}" for name in stray]
    if refused:
        click.echo(
            f"llamabin: warning: ignoring built-in defaults that only the command line may set: {' '.join(refused)}",
            err=True,
        )
    return {k: v for k, v in chosen.items() if k not in stray}


def _bakeable_params() -> set[str]:
    return {p.name for p in command.params if p.name and set(p.opts) & BAKED_FLAGS.keys()}


def _names_a_model(args: list[str]) -> bool:
    """With -m another model, the built-in model's defaults do not apply."""
    return any(a in ("-m", "--model") or a.startswith("--model=") for a in args)


def _asks_for_help(args: list[str]) -> bool:
    return any(a in ("-h", "--help") for a in args)


def _prog_name() -> str:
    return Path(sys.argv[0]).name if getattr(sys, "frozen", False) else "llamabin"


def _discard_stdout() -> None:
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def _fail(message: str) -> None:
    click.echo(f"llamabin: error: {message}", err=True)
