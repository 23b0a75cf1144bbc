"""The command lines of every program the benchmarks measure, and their versions."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from bench.common import ROOT, WAIT_S
from bench.config import ONESHOT_PROMPT, ONESHOT_TOKENS, Config
from bench.processes import ServerSpec


@dataclass(frozen=True)
class Programs:
    """What the command lines need: the programs, and the flags every one
    of them runs with, so that compare.py and startup.py measure the same."""

    exe: Path  # the built file
    gguf: Path  # its model, for llama.cpp's tools and `python -m chat`
    bin_dir: Path  # llama.cpp's tools
    threads: int
    ctx: int
    server_args: tuple[str, ...] = ()  # extra llama-server flags

    @classmethod
    def of(cls, cfg: Config) -> Programs:
        return cls(cfg.exe, cfg.gguf, cfg.bin_dir, cfg.threads, cfg.ctx, cfg.server_args)


def server_specs(cfg: Programs) -> dict[str, ServerSpec]:
    common = ["--host", "127.0.0.1"]

    def server_flags(port: int, slots: int) -> list[str]:
        # llamabin's own flags, the same for the packaged file and the source tree.
        listen = ["--server", "--nobrowser", *common, "--port", str(port)]
        return listen + ["-t", str(cfg.threads), "-c", str(cfg.ctx), "-np", str(slots)]

    def llamabin(port: int, slots: int) -> list[str]:
        return [str(cfg.exe), *server_flags(port, slots)]

    def unpackaged(port: int, slots: int) -> list[str]:
        return [sys.executable, "-m", "chat", "-m", str(cfg.gguf), *server_flags(port, slots)]

    def llama_server(port: int, slots: int) -> list[str]:
        return [
            str(cfg.bin_dir / "llama-server"),
            "-m",
            str(cfg.gguf),
            *common,
            "--port",
            str(port),
            "-t",
            str(cfg.threads),
            "-c",
            str(cfg.ctx),
            "-np",
            str(slots),
            *cfg.server_args,
        ]

    def llama_cpp_python(port: int, slots: int) -> list[str]:
        # No slots: it serves one request at a time. Both thread counts are
        # set, as the others use -t threads for prompt and generation alike.
        # By default a new request cuts the stream in progress short (it ends
        # with [DONE] and no finish_reason); queueing is what the others do.
        return [
            sys.executable,
            str(ROOT / "bench" / "llama_cpp_server.py"),
            "--model",
            str(cfg.gguf),
            *common,
            "--port",
            str(port),
            "--n_threads",
            str(cfg.threads),
            "--n_threads_batch",
            str(cfg.threads),
            "--n_ctx",
            str(cfg.ctx),
            "--interrupt_requests",
            "false",
        ]

    return {
        "llamabin": ServerSpec("llamabin", llamabin, "/health", native=True),
        "llama-server": ServerSpec("llama-server", llama_server, "/health", native=True),
        "python -m chat": ServerSpec("python -m chat", unpackaged, "/health", native=True),
        # It has no /health; /v1/models answers once the model is loaded.
        "llama-cpp-python": ServerSpec("llama-cpp-python", llama_cpp_python, "/v1/models", native=False),
    }


def oneshot_argvs(cfg: Programs) -> dict[str, list[str]]:
    flags = ["-p", ONESHOT_PROMPT, "-n", str(ONESHOT_TOKENS), "--temp", "0", "-t", str(cfg.threads), "-c", str(cfg.ctx)]
    return {
        "llamabin": [str(cfg.exe), "--cli", *flags, "--log-disable"],
        "python -m chat": [sys.executable, "-m", "chat", "-m", str(cfg.gguf), "--cli", *flags, "--log-disable"],
        # -no-cnv: with a chat template in the GGUF it would otherwise start
        # an interactive conversation; stdin is /dev/null as well.
        "llama-completion": [str(cfg.bin_dir / "llama-completion"), "-m", str(cfg.gguf), *flags, "-no-cnv"],
    }


def llama_bench_argv(cfg: Config, pp: int) -> list[str]:
    """llama-bench's pp/tg run, JSON on stdout: llama.cpp with no server at all."""
    return [
        str(cfg.bin_dir / "llama-bench"),
        "-m",
        str(cfg.gguf),
        "-p",
        str(pp),
        "-n",
        str(cfg.tokens),
        "-t",
        str(cfg.threads),
        "-r",
        str(cfg.runs),
        "-o",
        "json",
    ]


def versions(cfg: Config, env: dict[str, str]) -> str:
    def first_line(argv: list[str]) -> str:
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=WAIT_S, env=env)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"unknown ({exc})"
        lines = [ln.strip() for ln in (r.stdout + r.stderr).splitlines() if ln.strip()]
        return lines[0] if lines else "unknown"

    try:
        lcp = version("llama-cpp-python")
    except PackageNotFoundError:
        lcp = "not installed"
    llamabin = first_line([str(cfg.exe), "--version"])
    llama_cpp = first_line([str(cfg.bin_dir / "llama-server"), "--version"])
    return f"{llamabin} (the file), llama-cpp-python {lcp}, llama.cpp {llama_cpp} (llama-server --version)"
