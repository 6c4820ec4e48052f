"""``auto`` precision: bfloat16 only where /proc/cpuinfo says the CPU computes it natively."""

from __future__ import annotations

from pathlib import Path

import pytest

from memwise.embed import precision
from memwise.embed.precision import has_native_bf16, read_cpuinfo, resolve_precision

# Two processors of a Zen 4 EPYC (AVX512 with bfloat16), trimmed.
ZEN4 = """processor\t: 0
vendor_id\t: AuthenticAMD
flags\t\t: fpu vme sse sse2 avx avx2 avx512f avx512dq avx512_bf16 avx512vl
bugs\t\t: sysret_ss_attrs

processor\t: 1
vendor_id\t: AuthenticAMD
flags\t\t: fpu vme sse sse2 avx avx2 avx512f avx512dq avx512_bf16 avx512vl
"""
# Sapphire Rapids lists AMX (and AVX512-BF16 too); this sample keeps only AMX to test that flag alone.
AMX_ONLY = "processor\t: 0\nflags\t\t: fpu avx2 avx512f amx_bf16 amx_tile amx_int8\n"
# Skylake-SP: AVX512 without bfloat16, where bfloat16 is emulated (and slower than float32).
SKYLAKE = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 avx512f avx512dq avx512bw avx512vl avx512_vnni\n"
# An ARM machine: no ``flags`` line at all (``Features`` instead).
ARM = "processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd evtstrm aes pmull bf16 i8mm\n"


def test_native_bf16_is_read_from_the_flags_lines() -> None:
    assert has_native_bf16(ZEN4) and has_native_bf16(AMX_ONLY)
    assert not has_native_bf16(SKYLAKE)
    assert not has_native_bf16(ARM) and not has_native_bf16("")
    # Only the flags field counts: the word elsewhere (a model name, bugs) is not a flag.
    assert not has_native_bf16("model name\t: avx512_bf16 lookalike\nflags\t\t: fpu avx2\n")
    # A substring is not a flag either.
    assert not has_native_bf16("flags\t\t: fpu avx512_bf16x\n")


def test_every_processor_must_have_it() -> None:
    mixed = ZEN4 + "\nprocessor\t: 2\nflags\t\t: fpu sse2 avx avx2\n"
    assert not has_native_bf16(mixed)


def test_auto_follows_the_cpuinfo_file_and_explicit_values_pass_through(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    monkeypatch.setattr(precision, "CPUINFO", cpuinfo)
    cpuinfo.write_text(ZEN4)
    assert resolve_precision("auto") == "bfloat16"
    cpuinfo.write_text(SKYLAKE)
    assert resolve_precision("auto") == "float32"
    assert resolve_precision("bfloat16") == "bfloat16"  # an explicit choice is not second-guessed
    cpuinfo.unlink()  # not Linux: nothing to read, so float32
    assert read_cpuinfo() == "" and resolve_precision("auto") == "float32"
    cpuinfo.write_text(ZEN4)
    assert resolve_precision("float32") == "float32"
