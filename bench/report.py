"""How every benchmark script hands out its report."""

from __future__ import annotations

from pathlib import Path


def publish(text: str, out: Path | None) -> None:
    """The Markdown section to stdout, and appended to `out` (as
    bench/RESULTS.md) after a blank line when it is given."""
    print(text)
    if out is not None:
        with open(out, "a", encoding="utf-8") as f:
            f.write("\n" + text)
