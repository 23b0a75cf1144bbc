"""/metrics in Prometheus' text format: the engine's totals (which include
the chat's own turns in the default mode) and the server's request counts."""

from __future__ import annotations

from chat.server.state import ServerState


def prometheus_text(st: ServerState) -> str:
    stats = st.engine.stats()
    lines: list[str] = []

    def metric(name: str, kind: str, help: str, value: float) -> None:
        lines.extend([f"# HELP llamabin_{name} {help}", f"# TYPE llamabin_{name} {kind}", f"llamabin_{name} {value:g}"])

    metric("generations_total", "counter", "Generations finished, cancelled or failed.", stats.generations)
    metric("prompt_tokens_total", "counter", "Prompt tokens evaluated (not from the cache).", stats.prompt_tokens)
    metric("completion_tokens_total", "counter", "Tokens generated.", stats.completion_tokens)
    metric("prompt_seconds_total", "counter", "Time spent evaluating prompts.", stats.prompt_seconds)
    metric("generation_seconds_total", "counter", "Time spent generating tokens.", stats.generation_seconds)
    metric("tokens_per_second", "gauge", "Generation speed of the latest generation.", stats.last_tokens_per_second)
    metric("draft_tokens_total", "counter", "Tokens guessed by prompt lookup and evaluated.", stats.drafted_tokens)
    metric("draft_tokens_accepted_total", "counter", "Guessed tokens the sampler picked too.", stats.accepted_tokens)
    metric("prompt_cache_prompts", "gauge", "Prompts kept in memory after their slot moved on.", stats.cached_prompts)
    metric("prompt_cache_bytes", "gauge", "Memory those prompts take.", stats.cached_prompt_bytes)
    metric("prompt_cache_restored_total", "counter", "Saved prompts put back into a slot.", stats.restored_prompts)
    metric("queue_depth", "gauge", "Generations waiting for the engine.", stats.queue_depth)
    metric("busy", "gauge", "1 while a generation runs.", int(stats.busy))
    metric("server_generations_active", "gauge", "The server's generations queued or running.", st.generations.active)
    lines += [
        "# HELP llamabin_http_requests_total HTTP requests answered, by path and status.",
        "# TYPE llamabin_http_requests_total counter",
    ]
    for (path, status), n in sorted(st.counts.counts.items()):
        lines.append(f'llamabin_http_requests_total{{path="{path}",status="{status}"}} {n}')
    return "\n".join(lines) + "\n"
