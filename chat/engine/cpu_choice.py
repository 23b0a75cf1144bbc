"""Which CPU variant to run: the best one that passes a self-test.

ggml's own picker loads the variant with the highest score, the one whose
instructions this CPU reports. Reporting is not running: llama.cpp's AMX
kernels died with SIGILL on Linux machines that report AMX. So the first
launch on a machine ranks the variants as ggml does, then runs the best
one's self-test (`selftest.check`, in a child process) and falls back to
the next on a failure. The outcome is remembered in the user cache, keyed by
the libraries, the CPU and the kernel, so later launches load their variant
straight away, without scoring every library as ggml's picker does.
"""

from __future__ import annotations

import _ctypes
import ctypes
import hashlib
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from chat import hwcap, machine, paths
from chat.engine import selftest

RECORD = "cpu-kernels.json"
KEEP = 16  # machine/runtime combinations remembered


@dataclass
class Choice:
    variant: str | None
    passed: list[str] = field(default_factory=list)  # self-tested and fine
    failed: dict[str, str] = field(default_factory=dict)  # variant -> why it was skipped
    unsupported: list[str] = field(default_factory=list)  # this CPU lacks their instructions
    remembered: bool = False  # from the record of an earlier launch
    notes: tuple[str, ...] = ()

    def summary(self) -> str:
        """What was tested and skipped, for --doctor."""
        parts = []
        if self.passed:
            parts.append(f"{', '.join(self.passed)} passed")
        parts += [f"{name} skipped ({why})" for name, why in self.failed.items()]
        if not self.passed and not self.failed:
            parts.append("not run (fork is not available here)")
        when = "at an earlier launch on this machine" if self.remembered else "at this launch"
        return "; ".join(parts) + f", {when}"


def choose(files: dict[str, Path], ggml_path: Path) -> Choice:
    key = _key(files)
    record = _read_record()
    known = record.get(key)
    if isinstance(known, dict) and known.get("variant") in files:
        return Choice(
            known["variant"],
            list(known.get("passed", [])),
            dict(known.get("failed", {})),
            list(known.get("unsupported", [])),
            remembered=True,
        )
    choice = _test(files, ggml_path)
    if choice.variant is not None:
        record[key] = {
            "variant": choice.variant,
            "passed": choice.passed,
            "failed": choice.failed,
            "unsupported": choice.unsupported,
        }
        _write_record(dict(list(record.items())[-KEEP:]))
    return choice


def _test(files: dict[str, Path], ggml_path: Path) -> Choice:
    scores = {name: _score(path) for name, path in files.items()}
    ranked = sorted((n for n in files if scores[n] > 0), key=lambda n: -scores[n])
    choice = Choice(None, unsupported=sorted(n for n in files if scores[n] <= 0))
    if not hasattr(os, "fork"):  # Windows: ggml's own choice, untested
        choice.variant = ranked[0] if ranked else None
        return choice
    for name in ranked:
        why = selftest.check(files[name], ggml_path)
        if why is None:
            choice.passed.append(name)
            choice.variant = name
            break
        choice.failed[name] = why
    if choice.variant is not None:
        choice.notes = tuple(
            f"the CPU kernels '{name}' failed a self-test on this machine ({why}); using '{choice.variant}' instead"
            for name, why in choice.failed.items()
        )
    return choice


def _score(path: Path) -> int:
    """ggml_backend_score() of one variant: 0 when this CPU lacks its
    instructions. Loading a variant only runs its feature checks."""
    try:
        lib = ctypes.CDLL(str(path))
        score = lib.ggml_backend_score
    except (OSError, AttributeError):
        return 0
    score.restype = ctypes.c_int
    value = int(score())
    if hasattr(_ctypes, "dlclose"):
        _ctypes.dlclose(lib._handle)  # only the chosen one stays loaded
    return value


def _key(files: dict[str, Path]) -> str:
    """The libraries (by size and mtime), the CPU and the kernel: a new
    runtime, a migrated VM or a kernel update (AMX permission is the
    kernel's) is tested again."""
    h = hashlib.sha256()
    frozen = getattr(sys, "frozen", False)
    if frozen:
        # A packaged file's libraries come out of the file itself, and are
        # unpacked afresh (new mtimes) when it has no cache to keep them in:
        # the file's own identity stands for them.
        st = Path(sys.executable).stat()
        h.update(f"{st.st_size} {st.st_mtime_ns} {st.st_ino}\n".encode())
    for name in sorted(files):
        st = files[name].stat()
        h.update(f"{name} {st.st_size} {0 if frozen else st.st_mtime_ns}\n".encode())
    h.update(_cpu_identity().encode())
    h.update(os.uname().release.encode() if hasattr(os, "uname") else sys.platform.encode())
    return h.hexdigest()[:32]


def _cpu_identity() -> str:
    """The first processor's vendor, model and flags from /proc/cpuinfo
    (elsewhere the platform's own description)."""
    wanted = (
        "vendor_id",
        "cpu family",
        "model",
        "model name",
        "stepping",
        "microcode",
        "flags",
        "Features",
        "CPU implementer",
        "CPU part",
        "CPU variant",
    )
    # On ARM the kernel's HWCAP bits are what the variants are picked by
    # (and, under QEMU, the only part that follows the emulated CPU).
    arm = hwcap.identity()
    lines = machine.first_processor()
    if arm:
        lines = (lines or []) + [f"Features: {arm}"]
    if lines is None:
        import platform

        return f"{platform.machine()} {platform.processor()}"
    return "\n".join(line for line in lines if line.split(":", 1)[0].strip() in wanted)


def _record_path() -> Path:
    return paths.cache_dir() / RECORD


def _read_record() -> dict[str, object]:
    try:
        data = json.loads(_record_path().read_text(encoding="utf-8"))
    except (OSError, ValueError, paths.NoHomeError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_record(record: dict[str, object]) -> None:
    """Written to a private name and renamed: two first launches at once
    never see half a file. No cache (no home, read-only disk): the test
    simply runs again at the next launch."""
    try:
        path = _record_path()
        paths.make_private_dir(path.parent)
        tmp = path.with_name(f".{RECORD}.{os.getpid()}")
        tmp.write_text(json.dumps(record, indent=1), encoding="utf-8")
        os.replace(tmp, path)
    except (OSError, paths.NoHomeError):
        pass
