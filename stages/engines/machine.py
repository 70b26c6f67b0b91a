"""What this machine's CPU is and can do, as precision probes need to know it (no torch)."""
from __future__ import annotations

BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})  # units that run bf16 at speed
PROBE_FLAGS = frozenset({"avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8", "fma"})


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux), empty where they cannot be read."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""
