"""The CPU as runtimes see it: model name, the ISA flags kernels dispatch on, and the kind of CPU they make."""

import os
import platform
import re
from pathlib import Path
from typing import Any

# Instruction-set flags that change which kernels a CPU runtime picks (and so what an optimized model holds).
ISA_FLAGS = [
    "sse4_1",
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512dq",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "avx_vnni",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
    "neon",
    "asimd",
    "asimddp",
    "sve",
]
ISA_CAP = "ONEDNN_MAX_CPU_ISA"  # oneDNN reads it at start: OpenVINO's CPU kernels then stop at that ISA


def cpu_fingerprint() -> dict[str, Any]:
    """The CPU as a runtime sees it: architecture, model name, relevant ISA flags, usable cores.

    Returns:
        dict: ``arch``, ``model``, ``isa`` (sorted flags kernels dispatch on), ``isa_cap`` (``ONEDNN_MAX_CPU_ISA``,
        which caps oneDNN's kernels, OpenVINO's on CPUs; ``none`` unset) and ``cores`` (this process's).
    """
    model, flags = None, set()
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        names = re.findall(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
        model = names[0].strip() if names else None
        for line in re.findall(r"^(?:flags|Features)\s*:\s*(.+)$", text, re.MULTILINE)[:1]:
            flags = set(line.split())
    except OSError:
        pass
    return {
        "arch": platform.machine(),
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "isa": sorted(flags & set(ISA_FLAGS)),
        "isa_cap": os.environ.get(ISA_CAP, "").strip().upper() or "none",
        "model": model or platform.processor() or "unknown",  # processor() runs `uname -p`: only when needed
    }


def cpu_kind(cpu: dict[str, Any]) -> tuple[str, ...]:
    """What makes two CPUs compute alike: the architecture, the ISA flags kernels dispatch on and oneDNN's cap on
    them (not the model name or the core count).

    Args:
        cpu: a ``cpu_fingerprint``.

    Returns:
        tuple[str, ...]: the architecture, then the flags.
    """
    cap = cpu.get("isa_cap") or "none"
    return (cpu.get("arch") or "unknown", *sorted(cpu.get("isa", [])), *([] if cap == "none" else [f"cap={cap}"]))


def cpu_label(cpu: dict[str, Any]) -> str:
    """One readable line for a CPU: ``AMD EPYC (x86_64: avx avx2 ...)``.

    Args:
        cpu: a ``cpu_fingerprint``.

    Returns:
        str: model name, architecture and ISA flags.
    """
    arch, *isa = cpu_kind(cpu)
    return f"{cpu.get('model') or 'unknown CPU'} ({arch}: {' '.join(isa) or 'baseline ISA'})"


WIDEST = (
    ("amx_tile", "AMX"),
    ("avx512f", "AVX-512"),
    ("avx2", "AVX2"),
    ("sve", "SVE"),
    ("asimd", "NEON"),
)  # the widest vector ISA, by flag


def cpu_class(cpu: dict[str, Any]) -> str:
    """A CPU in a few words: ``Intel Xeon (AMX)``, ``AMD EPYC (AVX-512)``, with oneDNN's cap where set.

    Args:
        cpu: a ``cpu_fingerprint``.

    Returns:
        str: the model name and its widest vector ISA.
    """
    isa = set(cpu.get("isa", []))
    widest = next((name for flag, name in WIDEST if flag in isa), cpu.get("arch") or "unknown")
    cap = cpu.get("isa_cap") or "none"
    return f"{cpu.get('model') or 'unknown CPU'} ({widest}{'' if cap == 'none' else f', oneDNN capped at {cap}'})"


VNNI_ISA = ("avx512_vnni", "avx_vnni", "amx_int8")  # x86 int8 dot products without int16 saturation


def x86_without_vnni(cpu: dict[str, Any]) -> bool:
    """Whether ``cpu`` is x86 without VNNI, where int8 kernels multiply uint8 by int8 into saturating int16 pairs.

    Args:
        cpu: a ``cpu_fingerprint``.

    Returns:
        bool: True on x86 CPUs with none of ``VNNI_ISA``.
    """
    return cpu.get("arch") in ("x86_64", "AMD64") and not set(VNNI_ISA) & set(cpu.get("isa", []))
