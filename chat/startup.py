"""What a packaged file does before the engine starts: check its weights,
and describe itself in --help."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable

from chat.bundle import Bundle, verify
from chat.errors import EXIT_OK, UsageError


def _progress(enabled: bool, total: int) -> tuple[Callable[[int, int], None] | None, Callable[[], None]]:
    """A progress bar on stderr for reading big weights, when anyone is watching."""
    if not enabled or total < 256 << 20 or not sys.stderr.isatty():
        return None, lambda: None
    from tqdm import tqdm

    bar = tqdm(total=total, unit="B", unit_scale=True, desc="verifying weights", file=sys.stderr, leave=False)

    def update(done: int, _total: int) -> None:
        bar.update(done - bar.n)

    return update, bar.close


def check_bundle(bundle: Bundle, quiet: bool) -> None:
    """Full sha256 check on the first launch of this file; later launches
    only re-read the footer and manifest (already done to find the bundle)."""
    update, close = _progress(not quiet, bundle.payload.blob_size)
    try:
        verify(bundle, force=False, progress=update)
    finally:
        close()


def verify_bundle(bundle: Bundle | None, quiet: bool) -> int:
    if bundle is None:
        raise UsageError("--verify checks the weights built into a packaged file; this one has none")
    update, close = _progress(not quiet, bundle.payload.blob_size)
    try:
        verify(bundle, force=True, progress=update)
    finally:
        close()
    digest = bundle.manifest.get("gguf", {}).get("sha256", "")
    print(f"weights verified: sha256 {digest}")
    return EXIT_OK


def describe_bundle(bundle: Bundle) -> str:
    gguf = bundle.manifest.get("gguf", {})
    lines = [
        f"Built-in model: {bundle.manifest.get('name', '?')} ({gguf.get('architecture', '?')},"
        f" {gguf.get('quantization', '?')}, {gguf.get('size', 0) / 2**20:.0f} MiB)."
    ]
    if bundle.args:
        lines.append("Built-in defaults (flags override them): " + " ".join(shlex.quote(a) for a in bundle.args))
    lines.append("Run another model with -m FILE.gguf; the built-in defaults then do not apply.")
    return "\n".join(lines)
