"""Which arithmetic the local embedder runs in when the configuration says ``auto``.

bfloat16 pays only where the CPU multiplies bfloat16 itself: all-MiniLM-L6-v2 then encodes 2.5-3x faster
than in float32 with vectors within about 1e-4 cosine of float32's. Without native support torch emulates
bfloat16 and it can be slower than float32, so ``auto`` takes bfloat16 only on a CPU that lists
``avx512_bf16`` or ``amx_bf16`` among its flags, and float32 everywhere else (other systems, other
architectures, or when the flags cannot be read).

The flags come from ``/proc/cpuinfo`` rather than from torch: ``torch.ops.mkldnn._is_mkldnn_bf16_supported``
answers yes on plain AVX512, where bfloat16 is emulated and slow, and asking torch would also import it
before the embedder has set ``OMP_WAIT_POLICY``.
"""

from __future__ import annotations

from pathlib import Path

AUTO = "auto"
"""The precision that picks bfloat16 or float32 for the CPU it runs on."""

NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
"""x86 flags of /proc/cpuinfo that mean bfloat16 arithmetic in hardware."""

CPUINFO = Path("/proc/cpuinfo")
"""Where Linux lists the CPU flags; absent elsewhere, which means float32."""


def has_native_bf16(cpuinfo: str) -> bool:
    """Whether every processor in a /proc/cpuinfo text lists a native bfloat16 flag.

    Every ``flags`` line must, not just one: the encoding threads may run on any core, and a machine
    whose cores differ is better served by float32 than by emulated bfloat16 on some of them.

    Example:
        >>> has_native_bf16("flags : fpu avx2 avx512f avx512_bf16"), has_native_bf16("flags : fpu avx2 avx512f")
        (True, False)
    """
    flag_sets = [
        set(value.split())
        for key, sep, value in (line.partition(":") for line in cpuinfo.splitlines())
        if sep and key.strip() == "flags"
    ]
    return bool(flag_sets) and all(flags & NATIVE_BF16_FLAGS for flags in flag_sets)


def read_cpuinfo(path: Path | None = None) -> str:
    """The text of ``path`` (default :data:`CPUINFO`), or "" where there is none to read (not Linux)."""
    try:
        return (path or CPUINFO).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def resolve_precision(requested: str) -> str:
    """The precision to run: ``requested`` itself, or for ``auto`` bfloat16 on native hardware, else float32."""
    if requested != AUTO:
        return requested
    return "bfloat16" if has_native_bf16(read_cpuinfo()) else "float32"
