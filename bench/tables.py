"""compare.py's Markdown report: the targets, then one table (or two) for
each of its four sections."""

from __future__ import annotations

from datetime import datetime

from bench.common import MB, SEED
from bench.config import ONESHOT_PROMPT, ONESHOT_TOKENS, STREAMS_PER_RUN, Config
from bench.results import LoadStats, OneShotStats, SingleStats
from bench.stats import Samples, fmt_num, fmt_ratio, percentile, ratio
from bench.targets import targets


def with_ratio(
    samples: dict[str, Samples], name: str, ref: str, digits: int = 1, scale: float = 1.0
) -> tuple[str, str]:
    s = samples.get(name)
    if s is None:
        return "n/a", "n/a"
    r = samples.get(ref)
    return s.fmt(digits, scale), fmt_ratio(ratio(s.median, r.median if r else None))


def single_tables(cfg: Config, st: SingleStats) -> list[str]:
    prompt_n = max(st.prompt_n.values(), default=0)
    predicted_n = max(st.predicted_n.values(), default=0)
    lines = [
        "#### 1. Single stream (1 slot)",
        "",
        f"Engine: llama.cpp's `/completion` on the same raw prompt (~{prompt_n} tokens, not cached) and "
        f"{cfg.tokens} generated tokens, as each engine times them itself (`timings`).",
        "",
        "| engine | prefill t/s | vs llama-server | decode t/s | vs llama-server | tokens (prompt/generated) |",
        "|---|---|---|---|---|---|",
    ]
    for name in ("llamabin", "llama-server", "python -m chat"):
        if name in st.errors:
            lines.append(f"| {name} | not available: {st.errors[name]} | | | | |")
            continue
        pf, pf_r = with_ratio(st.prefill, name, "llama-server")
        dc, dc_r = with_ratio(st.decode, name, "llama-server")
        lines.append(
            f"| {name} | {pf} | {pf_r} | {dc} | {dc_r} | {st.prompt_n.get(name, 0)}/{st.predicted_n.get(name, 0)} |"
        )
    if "llama-bench" in st.errors:
        lines.append(f"| llama-bench | not available: {st.errors['llama-bench']} | | | | |")
    else:
        pp, tg = st.bench.get("prefill"), st.bench.get("decode")
        ref_pf, ref_dc = st.prefill.get("llama-server"), st.decode.get("llama-server")
        lines.append(
            f"| llama-bench ({st.bench_spec}, no server) | {fmt_num(pp)} | "
            f"{fmt_ratio(ratio(pp, ref_pf.median if ref_pf else None))} | {fmt_num(tg)} | "
            f"{fmt_ratio(ratio(tg, ref_dc.median if ref_dc else None))} | |"
        )
    lines += [
        "",
        f"Server: one streaming chat client, {STREAMS_PER_RUN} requests to each server a run (each a sample), sent to the servers in turn while all of them are up, {cfg.tokens} tokens asked (generated: {predicted_n} on the engine row above).",
        "",
        "| server | time to first token ms | vs llama-server | t/s after first token | vs llama-server |",
        "|---|---|---|---|---|",
    ]
    for name in ("llamabin", "llama-server", "python -m chat", "llama-cpp-python"):
        if name in st.errors:
            lines.append(f"| {name} | not available: {st.errors[name]} | | | |")
            continue
        tt, tt_r = with_ratio(st.ttft, name, "llama-server", 0, 1000)
        tps, tps_r = with_ratio(st.stream_tps, name, "llama-server")
        lines.append(f"| {name} | {tt} | {tt_r} | {tps} | {tps_r} |")
    return lines


def load_table(cfg: Config, ls: LoadStats) -> list[str]:
    lines = [
        "#### 2. Concurrent streaming clients",
        "",
        f"Every client streams a chat answer of at most {cfg.tokens} tokens (temperature 0, seed {SEED}), "
        "all released at once; aggregate = completion tokens / wall time. Cut: non-200, an error, "
        "no `[DONE]`, or `length` with fewer tokens than asked. Early: the model ended the answer itself. "
        "llama-cpp-python's server has no slots: it answers one request at a time (run with "
        "`--interrupt_requests false`, else each new request cuts the stream in progress). Peak RSS: the largest "
        "VmHWM in the server's process tree.",
        "",
        "| server | slots | clients | aggregate t/s | vs llama-server | TTFT p50 ms | TTFT p95 ms | streams | cut | early | peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for slots, client_counts in cfg.loads:
        for clients in client_counts:
            ref = ls.rows.get(("llama-server", slots, clients))
            for name in ("llamabin", "llama-server", "llama-cpp-python"):
                slot_txt = str(slots) if name != "llama-cpp-python" else "1 (serial)"
                if name in ls.errors:
                    lines.append(
                        f"| {name} | {slot_txt} | {clients} | not available: {ls.errors[name]} | | | | | | | |"
                    )
                    continue
                row = ls.rows.get((name, slots, clients))
                if row is None:
                    lines.append(f"| {name} | {slot_txt} | {clients} | n/a | | | | | | | |")
                    continue
                p50, p95 = percentile(row.ttfts, 50), percentile(row.ttfts, 95)
                lines.append(
                    f"| {name} | {slot_txt} | {clients} | {row.agg.fmt()} | "
                    f"{fmt_ratio(ratio(row.agg.median, ref.agg.median if ref else None))} | "
                    f"{fmt_num(p50 * 1000 if p50 is not None else None, 0)} | "
                    f"{fmt_num(p95 * 1000 if p95 is not None else None, 0)} | "
                    f"{row.streams} | {row.cut} | {row.early} | {row.rss_mib.fmt(0)} |"
                )
    reasons = sorted({f"{name}: {why}" for (name, _, _), row in ls.rows.items() for why in row.cut_reasons})
    if reasons:
        lines += ["", "Cut streams: " + "; ".join(reasons[:10]) + "."]
    return lines


def start_and_oneshot_tables(single: SingleStats, os_: OneShotStats) -> list[str]:
    lines = [
        "#### 3. Start and one-shot",
        "",
        "Start: spawn to the first 200 from `/health` (`/v1/models` for llama-cpp-python), 1 slot, "
        "LLAMABIN_HOME already verified and its runtime unpacked.",
        "",
        "| server | start to ready s | vs llama-server |",
        "|---|---|---|",
    ]
    for name in ("llamabin", "llama-server", "python -m chat", "llama-cpp-python"):
        if name in single.errors and name not in single.start:
            lines.append(f"| {name} | not available: {single.errors[name]} | |")
            continue
        s, r = with_ratio(single.start, name, "llama-server", 2)
        lines.append(f"| {name} | {s} | {r} |")
    lines += [
        "",
        f"One-shot: `-p '{ONESHOT_PROMPT}' -n {ONESHOT_TOKENS} --temp 0`, whole-process wall time and peak RSS "
        "(wait4's ru_maxrss: the biggest process of the tree, the bootloader's child included). llama.cpp's "
        "one-shot program is `llama-completion -no-cnv` (its `llama-cli` is an interactive chat).",
        "",
        "| program | wall s | vs llama-completion | peak RSS MiB | minus llama-completion's MiB |",
        "|---|---|---|---|---|",
    ]
    ref_rss = os_.rss_mib.get("llama-completion")
    for name in ("llamabin", "llamabin first", "llama-completion", "python -m chat"):
        label = {"llamabin": "llamabin `--cli` (warm)", "llamabin first": "llamabin `--cli` (first launch)"}.get(
            name, name
        )
        if name in os_.errors:
            lines.append(f"| {label} | not available: {os_.errors[name]} | | | |")
            continue
        w, w_r = with_ratio(os_.wall, name, "llama-completion", 2)
        rss = os_.rss_mib.get(name)
        diff = (
            None
            if rss is None or ref_rss is None or rss.median is None or ref_rss.median is None
            else rss.median - ref_rss.median
        )
        lines.append(f"| {label} | {w} | {w_r} | {rss.fmt(0) if rss else 'n/a'} | {fmt_num(diff, 0)} |")
    return lines


def size_table(cfg: Config, os_: OneShotStats) -> list[str]:
    exe, gguf = cfg.exe.stat().st_size, cfg.gguf.stat().st_size
    first, warm = os_.wall.get("llamabin first"), os_.wall.get("llamabin")
    return [
        "#### 4. Size and first launch",
        "",
        "| item | value |",
        "|---|---|",
        f"| file size | {exe / MB:.1f} MB |",
        f"| GGUF size | {gguf / MB:.1f} MB |",
        f"| file size minus GGUF size | {(exe - gguf) / MB:.1f} MB |",
        f"| first launch `--cli -n {ONESHOT_TOKENS}` (fresh LLAMABIN_HOME) s | {first.fmt(2) if first else 'n/a'} |",
        f"| warm launch `--cli -n {ONESHOT_TOKENS}` s | {warm.fmt(2) if warm else 'n/a'} |",
        f"| first / warm | {fmt_ratio(ratio(first.median if first else None, warm.median if warm else None))} |",
    ]


def report(
    cfg: Config,
    started: datetime,
    machine_txt: str,
    versions_txt: str,
    single: SingleStats,
    load: LoadStats,
    oneshot: OneShotStats,
    elapsed: float,
) -> str:
    found = targets(cfg, single, load, oneshot)
    extra = f" llama-server extra flags: `{' '.join(cfg.server_args)}`." if cfg.server_args else ""
    lines = [
        f"### llamabin vs llama.cpp ({started:%Y-%m-%d %H:%M}{', smoke run' if cfg.smoke else ''})",
        "",
        f"Machine: {machine_txt}. Versions: {versions_txt}.",
        "",
        f"Reference: {cfg.reference}.",
        "",
        f"Model: {cfg.gguf.name}; file: {cfg.exe.name}. Threads {cfg.threads}, context {cfg.ctx} (shared by the slots), "
        f"{cfg.runs} run{'s' if cfg.runs != 1 else ''} alternated (order flipped every run), {cfg.tokens} tokens "
        f"per request; medians with (min-max); ratios are llamabin (or the row) / reference.{extra} "
        f"Took {elapsed:.0f} s.",
        "",
        "#### Targets",
        "",
        "| target | llamabin | limit | result |",
        "|---|---|---|---|",
        *[t.row() for t in found],
        "",
        *single_tables(cfg, single),
        "",
        *load_table(cfg, load),
        "",
        *start_and_oneshot_tables(single, oneshot),
        "",
        *size_table(cfg, oneshot),
        "",
    ]
    return "\n".join(lines)
