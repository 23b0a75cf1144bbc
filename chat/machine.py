"""What the CPU says about itself, from /proc/cpuinfo, read afresh at every
call. Where there is no such file (macOS, Windows) or it cannot be read, the
answers say so ("unknown", nothing, None): nothing here raises."""

from __future__ import annotations

CPUINFO = "/proc/cpuinfo"


def _cpuinfo_lines() -> list[str] | None:
    """The lines of /proc/cpuinfo, or None where it cannot be read."""
    try:
        with open(CPUINFO, encoding="ascii", errors="replace") as f:
            return f.read().split("\n")
    except OSError:
        return None


def first_processor() -> list[str] | None:
    """The first processor's lines, stripped, up to the blank line that ends
    them; None where there is no /proc/cpuinfo."""
    lines = _cpuinfo_lines()
    if lines is None:
        return None
    found: list[str] = []
    for line in lines:
        if not line.strip():
            break
        found.append(line.strip())
    return found


def cpu_model(default: str = "unknown") -> str:
    """The first "model name" /proc/cpuinfo gives, or `default` (there is
    none on macOS, nor on many ARM machines)."""
    for line in _cpuinfo_lines() or []:
        if line.startswith("model name"):
            return line.partition(":")[2].strip()
    return default
