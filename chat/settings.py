"""One typed settings object, built in one place from the command line
(and, in a packaged file, the baked defaults the command line overrides)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from pathlib import Path

from chat.conversation import ConversationOptions
from chat.engine.engine import EngineConfig, default_threads
from chat.engine.llama import LoraAdapter, ModelSource
from chat.engine.lookup import DEFAULT_DRAFT_MAX
from chat.engine.rpc import Endpoint
from chat.engine.types import SamplingParams
from chat.server.settings import (
    DEFAULT_HOST,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_PORT,
    DEFAULT_REQUEST_TIMEOUT,
    ServerSettings,
)
from chat.session import TemplateChoice


class Mode(str, enum.Enum):
    DEFAULT = "default"  # the chat, with the server beside it
    CHAT = "chat"  # the chat alone
    CLI = "cli"  # one raw completion
    ASK = "ask"  # one templated question
    SERVER = "server"  # the server alone
    RPC_WORKER = "rpc-worker"  # no model: this machine's devices lent to another's --rpc


@dataclass(frozen=True)
class Settings:
    mode: Mode
    model: ModelSource
    n_ctx: int | None = None
    ctx_force: bool = False
    n_predict: int | None = None  # None: until end of turn or context full
    sampling: SamplingParams = field(default_factory=SamplingParams)
    threads: int = field(default_factory=default_threads)
    n_gpu_layers: int = 0
    rpc: tuple[Endpoint, ...] = ()  # RPC workers whose devices take offloaded layers
    tensor_split: tuple[float, ...] = ()  # proportions per device; empty: by free memory
    draft_max: int = DEFAULT_DRAFT_MAX  # prompt-lookup drafts; 0: off
    cache_ram_mib: int | None = None  # the prompt cache's bound; None: the default
    lora: tuple[LoraAdapter, ...] = ()  # adapters applied at run time
    parallel: int = 1  # sequences decoded together (the server's slots)
    kv_unified: bool = True  # the slots share one KV pool; False: -c / -np each
    template: str | None = None  # builtin name or file; None: the model's own
    baked_template: dict[str, str] | None = None  # a template file built into the executable
    system_prompt: str | None = None
    prompt: str | None = None  # --cli / --ask text, already read from -f or stdin
    verbose: bool = False
    log_disable: bool = False
    verbose_prompt: bool = False
    history_file: Path | None = None
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    ollama_port: int | None = None
    api_key: str | None = None
    allowed_hosts: tuple[str, ...] = ()
    cors_origins: tuple[str, ...] = ()
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT
    open_browser: bool = True

    def engine_config(self) -> EngineConfig:
        return EngineConfig(
            model=self.model,
            n_parallel=self.parallel,
            kv_unified=self.kv_unified,
            n_ctx=self.n_ctx,
            ctx_force=self.ctx_force,
            n_threads=self.threads,
            draft_max=self.draft_max,
            cache_ram_mib=self.cache_ram_mib,
            lora=self.lora,
            n_gpu_layers=self.n_gpu_layers,
            rpc=self.rpc,
            tensor_split=self.tensor_split,
            verbose=self.verbose,
        )

    def template_choice(self) -> TemplateChoice:
        return TemplateChoice(self.template, self.baked_template)

    def conversation_options(self) -> ConversationOptions:
        return ConversationOptions(self.system_prompt, self.sampling, self.n_predict)

    def server_settings(self) -> ServerSettings:
        """The server's settings; the sampling flags become the defaults for
        fields a request leaves out (but --grammar/--json stay the chat's)."""
        return ServerSettings(
            host=self.host,
            port=self.port,
            ollama_port=self.ollama_port,
            api_key=self.api_key,
            allowed_hosts=self.allowed_hosts,
            cors_origins=self.cors_origins,
            max_connections=self.max_connections,
            request_timeout=self.request_timeout,
            open_browser=self.open_browser,
            sampling=replace(self.sampling, grammar=None),
            max_tokens=self.n_predict,
            verbose=self.verbose,
        )
