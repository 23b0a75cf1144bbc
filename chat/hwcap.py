"""What an ARM CPU says it can do, as the kernel tells every program: the
AT_HWCAP and AT_HWCAP2 words of the auxiliary vector (getauxval, else
/proc/self/auxv). llama.cpp's ARM CPU variants are scored by exactly these
bits (ggml-feats.h: asimddp for dotprod, fphp and asimdhp for fp16, sve,
sve2, i8mm, sme). Under QEMU's user-mode emulation they are the emulated
CPU's (QEMU_CPU), while /proc/cpuinfo stays the host's. Only Linux on
aarch64 has them here; elsewhere everything answers "nothing"."""

from __future__ import annotations

import ctypes
import platform
import struct
import sys

AT_HWCAP, AT_HWCAP2 = 16, 26

# Bit positions, from Linux's arch/arm64/include/uapi/asm/hwcap.h (the
# names /proc/cpuinfo's "Features" line uses).
HWCAP = (
    "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm jscvt fcma lrcpc"
    " dcpop sha3 sm3 sm4 asimddp sha512 sve asimdfhm dit uscat ilrcpc flagm ssbs sb paca pacg"
).split()
HWCAP2 = (
    "dcpodp sve2 sveaes svepmull svebitperm svesha3 svesm4 flagm2 frint svei8mm svef32mm svef64mm"
    " svebf16 i8mm bf16 dgh rng bti mte ecv afp rpres mte3 sme smei16i64 smef64f64 smei8i32"
    " smef16f32 smeb16f32 smef32f32 smefa64 wfxt ebf16 sveebf16 cssc rprfm sve2p1 sme2"
).split()

# The ones llama.cpp's variants are picked by, in the order they add up.
KERNEL_FEATURES = ("asimd", "asimddp", "fphp", "asimdhp", "sve", "i8mm", "sve2", "sme")


def is_arm_linux() -> bool:
    return sys.platform.startswith("linux") and platform.machine().lower() in ("aarch64", "arm64")


def words() -> tuple[int, int] | None:
    """(AT_HWCAP, AT_HWCAP2), or None where there are none (not ARM Linux)."""
    if not is_arm_linux():
        return None
    try:
        getauxval = ctypes.CDLL(None).getauxval
        getauxval.restype = ctypes.c_ulong
        getauxval.argtypes = [ctypes.c_ulong]
        return int(getauxval(AT_HWCAP)), int(getauxval(AT_HWCAP2))
    except (OSError, AttributeError):
        pass
    try:
        with open("/proc/self/auxv", "rb") as f:
            data = f.read()
    except OSError:
        return None
    found = dict(struct.iter_unpack("<QQ", data[: len(data) // 16 * 16]))
    return found.get(AT_HWCAP, 0), found.get(AT_HWCAP2, 0)


def features() -> list[str]:
    """Every feature the two words name (empty where there are none)."""
    got = words()
    if got is None:
        return []
    hwcap, hwcap2 = got
    return [n for i, n in enumerate(HWCAP) if hwcap >> i & 1] + [n for i, n in enumerate(HWCAP2) if hwcap2 >> i & 1]


def kernel_features() -> str:
    """The features the CPU variants are picked by, those seen and those not,
    for --doctor: 'asimd asimddp fphp asimdhp (no sve i8mm sve2 sme)'."""
    seen = set(features())
    have = [n for n in KERNEL_FEATURES if n in seen]
    lack = [n for n in KERNEL_FEATURES if n not in seen]
    return " ".join(have) + (f" (no {' '.join(lack)})" if lack else "")


def identity() -> str:
    """The two words as text, for keys that must change with the CPU ("" off ARM)."""
    got = words()
    return "" if got is None else f"hwcap {got[0]:#x} {got[1]:#x}"
