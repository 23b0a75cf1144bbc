"""ARM's HWCAP bits as --doctor and the CPU-kernel record read them, with
the words QEMU gives its emulated CPUs (getauxval under QEMU_CPU=...)."""

from __future__ import annotations

import pytest

from chat import hwcap

# (AT_HWCAP, AT_HWCAP2) as qemu-aarch64 7.2 reports them.
CORTEX_A53 = (0x8FB, 0x0)
CORTEX_A76 = (0x119FFB, 0x0)  # neoverse-n1 reports the same
MAX = (0xECFFFFFB, 0x7F877FFF)


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        (CORTEX_A53, "asimd (no asimddp fphp asimdhp sve i8mm sve2 sme)"),
        (CORTEX_A76, "asimd asimddp fphp asimdhp (no sve i8mm sve2 sme)"),
        (MAX, "asimd asimddp fphp asimdhp sve i8mm sve2 sme"),
    ],
)
def test_the_features_the_variants_are_picked_by(
    monkeypatch: pytest.MonkeyPatch, words: tuple[int, int], expected: str
) -> None:
    monkeypatch.setattr(hwcap, "words", lambda: words)
    assert hwcap.kernel_features() == expected


def test_bit_names_follow_linux(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hwcap, "words", lambda: (1 << 20 | 1 << 22, 1 << 1 | 1 << 13 | 1 << 23 | 1 << 37))
    assert hwcap.features() == ["asimddp", "sve", "sve2", "i8mm", "sme", "sme2"]


def test_the_identity_tells_emulated_cpus_apart(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = set()
    for words in (CORTEX_A53, CORTEX_A76, MAX):
        monkeypatch.setattr(hwcap, "words", lambda w=words: w)
        seen.add(hwcap.identity())
    assert len(seen) == 3


def test_nothing_off_arm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hwcap, "is_arm_linux", lambda: False)
    assert hwcap.words() is None and hwcap.features() == [] and hwcap.identity() == ""
