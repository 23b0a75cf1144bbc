#!/usr/bin/env python3
"""The oldest glibc a built Linux file can start on.

Reads the GLIBC_x.y symbol versions that the file's bootloader and every
library packed inside it ask for (objdump's "Version References"), and
prints the newest of them: a system's glibc must be at least that. Run with
the venv's Python (it needs PyInstaller's archive reader):

    .venv/bin/python scripts/glibc-floor.py dist/SmolLM2-135M-Instruct.Q4_1-linux-x86_64 [--details]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

VERSION = re.compile(r"\bGLIBC_(\d+)\.(\d+)(?:\.(\d+))?\b")


def needed_versions(elf: Path) -> set[tuple[int, ...]]:
    """The glibc versions one ELF file references (empty for non-ELF)."""
    out = subprocess.run(["objdump", "-p", str(elf)], capture_output=True, text=True).stdout
    refs = out.split("Version References:", 1)[-1] if "Version References:" in out else ""
    return {tuple(int(x) for x in m.groups() if x is not None) for m in VERSION.finditer(refs)}


def floor(exe: Path) -> list[tuple[tuple[int, ...], str]]:
    """(newest glibc version, file) for the bootloader and each packed library."""
    from PyInstaller.archive.readers import CArchiveReader

    found = [(max(needed_versions(exe), default=(0,)), "(bootloader)")]
    archive = CArchiveReader(str(exe))
    with tempfile.TemporaryDirectory() as tmp:
        for name, entry in archive.toc.items():
            if entry[-1] not in ("b", "B", "x"):  # binaries and extension modules
                continue
            data = archive.extract(name)
            if not data or data[:4] != b"\x7fELF":
                continue
            path = Path(tmp) / "lib"
            path.write_bytes(data)
            versions = needed_versions(path)
            if versions:
                found.append((max(versions), name))
    return sorted(found, reverse=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("exe", type=Path)
    parser.add_argument("--details", action="store_true", help="list every packed library's own floor")
    args = parser.parse_args()
    if not args.exe.is_file():
        print(f"glibc-floor: no such file: {args.exe}", file=sys.stderr)
        return 2
    try:
        rows = floor(args.exe)
    except FileNotFoundError:
        print("glibc-floor: needs objdump (binutils)", file=sys.stderr)
        return 2
    except Exception as exc:  # PyInstaller's reader raises plain exceptions on non-PyInstaller files
        print(f"glibc-floor: {args.exe} is not a PyInstaller onefile program: {exc}", file=sys.stderr)
        return 2
    top, who = rows[0]
    print(f"glibc {'.'.join(map(str, top))} (newest version asked for, by {who})")
    if args.details:
        for version, name in rows:
            print(f"  {'.'.join(map(str, version)):>8}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
