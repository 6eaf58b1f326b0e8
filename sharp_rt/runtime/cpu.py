"""What this CPU can compute, and how fast at most: model name, flags, matrix units, peak FLOP/cycle.

Read from ``/proc/cpuinfo`` on Linux (standard library only; never imports torch
or an inference runtime); elsewhere only the model name is known and every
feature reads as absent.

Peak rates per core and cycle (``peak_rates``), from the vendors' manuals:

| unit (flags) | fp32 FLOP | bf16 FLOP | int8 op | source |
| --- | ---: | ---: | ---: | --- |
| AVX2 + FMA, 2 x 256-bit FMA pipes | 32 | 32 | 64 (128: avx_vnni) | [1], [2] |
| AMD Zen 4 AVX-512 (512-bit ops on two 256-bit pipes) | 32 | 64 | 128 | [1] |
| AMD Zen 5 AVX-512 (AMD + avx512_vp2intersect) | 64 | 128 | 256 | [3] |
| Intel AVX-512, 2 FMA ports | 64 | 128 | 256 | [2] |
| Intel AMX (amx_bf16, amx_int8) | 64 | 1024 | 2048 | [2], chapter "Intel AMX" |

[1] AMD Software Optimization Guide for AMD Family 19h Processors (Zen 4).
[2] Intel 64 and IA-32 Architectures Optimization Reference Manual.
[3] AMD Software Optimization Guide for AMD Family 1Ah Processors (Zen 5).

* bf16 counts ``VDPBF16PS`` (two bf16 products per fp32 lane, ``avx512_bf16``)
  or AMX tiles; without either, bf16 runs at the fp32 rate (converted to fp32).
* int8 counts ``VPDPBUSD`` (``avx512_vnni`` / ``avx_vnni``: four products per
  32-bit lane) or AMX-INT8; without VNNI, ``VPMADDUBSW`` sequences at about the
  fp32 FMA rate x 2.
* An FMA is 2 FLOP.  Intel server parts with one AVX-512 FMA port (some Xeon
  Silver/Bronze) reach half the fp32 and ``VDPBF16PS`` figures: flags cannot tell,
  so these are upper bounds.
"""

from __future__ import annotations

import dataclasses
import os
import platform
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")


@dataclasses.dataclass(frozen=True)
class CpuInfo:
    """A CPU's identity and instruction-set flags (as Linux's ``/proc/cpuinfo`` names them)."""

    model_name: str  # e.g. "AMD EPYC" or "Intel(R) Xeon(R) Platinum 8480+"
    vendor: str  # "AuthenticAMD", "GenuineIntel", or "" when unknown
    flags: frozenset[str]  # e.g. {"avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", ...}
    logical_cpus: int  # CPUs this process may run on
    mhz: float | None  # clock the kernel reports (in a VM often the nominal, not the boost clock)

    @property
    def bf16_unit(self) -> str | None:
        """The native bf16 matrix unit: ``"AMX-BF16"``, ``"AVX512-BF16"``, or None (bf16 emulated)."""
        if "amx_bf16" in self.flags:
            return "AMX-BF16"
        if "avx512_bf16" in self.flags:
            return "AVX512-BF16"
        return None

    @property
    def int8_unit(self) -> str | None:
        """The native int8 dot-product unit: ``"AMX-INT8"``, ``"AVX512-VNNI"``, ``"AVX-VNNI"`` or None."""
        if "amx_int8" in self.flags:
            return "AMX-INT8"
        if "avx512_vnni" in self.flags:
            return "AVX512-VNNI"
        if "avx_vnni" in self.flags:
            return "AVX-VNNI"
        return None

    @property
    def vector_isa(self) -> str:
        """The widest FMA instruction set: ``"AVX-512"``, ``"AVX2+FMA"`` or ``"other"``."""
        if "avx512f" in self.flags:
            return "AVX-512"
        if {"avx2", "fma"} <= self.flags:
            return "AVX2+FMA"
        return "other"


def parse_cpuinfo(text: str, logical_cpus: int | None = None) -> CpuInfo:
    """Parse the text of ``/proc/cpuinfo`` (the first processor's block) into a :class:`CpuInfo`."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    mhz = fields.get("cpu MHz")
    if logical_cpus is None:
        logical_cpus = sum(line.startswith("processor") for line in text.splitlines())
    return CpuInfo(
        model_name=fields.get("model name", platform.processor() or "unknown"),
        vendor=fields.get("vendor_id", ""),
        flags=frozenset(fields.get("flags", "").split()),
        logical_cpus=max(1, logical_cpus),
        mhz=float(mhz) if mhz else None,
    )


def read_cpu_info() -> CpuInfo:
    """The CPU of this machine (Linux: ``/proc/cpuinfo``; elsewhere the model name only, no flags)."""
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count() or 1
    try:
        text = CPUINFO.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return CpuInfo(platform.processor() or platform.machine(), "", frozenset(), usable, None)
    return parse_cpuinfo(text, logical_cpus=usable)


@dataclasses.dataclass(frozen=True)
class PeakRates:
    """Peak arithmetic per core and clock cycle (see the module docstring for the sources)."""

    fp32: int  # fp32 FLOP / cycle / core (FMA = 2 FLOP)
    bf16: int  # bf16 FLOP / cycle / core (fp32 rate when there is no native bf16 unit)
    int8: int  # int8 multiply-add ops / cycle / core (x2 counted, like FLOP)
    basis: str  # which row of the table applies, e.g. "AMD Zen 4 AVX-512 + AVX512-BF16"


def peak_rates(cpu: CpuInfo) -> PeakRates:
    """The per-core, per-cycle peak rates that ``cpu``'s flags imply (module docstring table)."""
    amd = cpu.vendor == "AuthenticAMD"
    if cpu.vector_isa == "AVX-512":
        if amd and "avx512_vp2intersect" in cpu.flags:
            fp32, basis = 64, "AMD Zen 5 AVX-512"
        elif amd:
            fp32, basis = 32, "AMD Zen 4 AVX-512"
        else:
            fp32, basis = 64, "Intel AVX-512 (2 FMA ports)"
    elif cpu.vector_isa == "AVX2+FMA":
        fp32, basis = 32, "AVX2 + FMA"
    else:
        return PeakRates(8, 8, 16, "no AVX2/FMA: scalar-SSE estimate")
    bf16 = fp32
    if cpu.bf16_unit == "AMX-BF16":
        bf16, basis = 1024, basis + " + AMX-BF16"
    elif cpu.bf16_unit == "AVX512-BF16":
        bf16, basis = 2 * fp32, basis + " + AVX512-BF16"
    int8 = {"AMX-INT8": 2048, "AVX512-VNNI": 4 * fp32, "AVX-VNNI": 128}.get(cpu.int8_unit or "", 2 * fp32)
    return PeakRates(fp32=fp32, bf16=bf16, int8=int8, basis=basis)
