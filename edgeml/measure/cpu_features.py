"""The CPU's instruction-set features: the one detection every part of edgeml reads.

Why one module: what a CPU computes fast decides which candidates are worth building (BF16 only
with BF16 instructions) and how INT8 is quantized (below). Detections that disagree make edgeml
contradict itself: `edgeml targets` once listed openvino-bf16 as measured here (it asked OpenVINO)
while optimize skipped it (it read /proc/cpuinfo). Everything asks this module instead.

Where the features come from: the first CPU's flags in /proc/cpuinfo ("flags" on x86, "Features"
on Arm), read once; the architecture is `platform.machine()`. `$EDGEML_CPU_FEATURES` overrides
them: a comma- or space-separated list of flags that edgeml then assumes instead, e.g.
`avx2,fma` for an AVX2-only CPU or `avx2,avx512f,avx512_vnni,avx512_bf16` for AVX-512 with VNNI
and BF16 (`none` assumes no features). It is read on every call, so tests can set it, and
subprocesses inherit it. Empty means unset. A name that is no flag edgeml knows (SHOWN, OTHER) nor
one this CPU lists is assumed all the same, but `unrecognised()` names it: doctor lists such names
and optimize warns about them, as they are most likely typos.

The INT8 scheme (`int8_scheme`): on x86 without VNNI/AMX, ONNX Runtime's u8*s8 kernels multiply
with VPMADDUBSW, which adds pairs of products into 16 bits and saturates; full-range 8-bit
weights then lose accuracy. ONNX Runtime's quantization guide names the remedy, `reduce_range`
(7-bit weights: 2*255*64 < 32767), and NNCF has `OverflowFix` (FIRST_LAYER for AVX2/AVX-512
without VNNI, DISABLE where VNNI exists). VNNI, AMX and Arm accumulate in 32 bits and keep the
full 8-bit range. When the features are unknown on x86 (or the architecture is neither x86 nor
Arm), edgeml takes the safe side and avoids saturation.
"""

from __future__ import annotations

import functools
import os
import platform
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

ENV = "EDGEML_CPU_FEATURES"
CPUINFO = Path("/proc/cpuinfo")
DETECTED, ASSUMED, UNKNOWN = "detected in /proc/cpuinfo", f"assumed from ${ENV}", "unknown"

# The flags inference runtimes pick kernels by, in the order doctor shows them: x86 then Arm.
SHOWN = ("avx2", "avx_vnni", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_int8",
         "amx_bf16", "neon", "asimd", "asimdhp", "asimddp", "i8mm", "bf16", "sve", "sve2")
# Other common flags of /proc/cpuinfo that an override may name: no decision of edgeml reads them.
OTHER = ("sse", "sse2", "sse3", "pni", "ssse3", "sse4_1", "sse4_2", "avx", "fma", "f16c", "bmi1", "bmi2", "popcnt",
         "avx512bw", "avx512cd", "avx512dq", "avx512vl", "avx512ifma", "avx512vbmi", "avx512_vbmi2",
         "avx512_bitalg", "avx512_vpopcntdq", "avx_vnni_int8", "avx_ne_convert", "amx_fp16", "fp", "fphp",
         "asimdrdm", "asimdfhm", "svei8mm", "svebf16", "sme")
BF16 = ("avx512_bf16", "amx_bf16", "bf16")               # x86 AVX512-BF16, AMX-BF16; Arm BF16
INT8_DOT = ("amx_int8", "avx512_vnni", "avx_vnni", "asimddp")   # int8 dot products into 32 bits


def parse_cpuinfo(text: str) -> frozenset[str] | None:
    """The flags of the first CPU in /proc/cpuinfo-style `text`, or None when it has no flag line."""
    match = re.search(r"^(?:flags|Features)\s*:(.*)$", text, re.MULTILINE)
    return None if match is None else frozenset(match.group(1).split())


def read_cpuinfo(path: Path = CPUINFO) -> frozenset[str] | None:
    """The flags of the first CPU listed in `path`, or None when the file or its flag line is missing."""
    try:
        return parse_cpuinfo(path.read_text())
    except OSError:
        return None


@functools.cache
def detected() -> frozenset[str] | None:
    """This machine's flags from /proc/cpuinfo (read once), ignoring the override."""
    return read_cpuinfo(CPUINFO)


def assumed() -> frozenset[str] | None:
    """The flags `$EDGEML_CPU_FEATURES` names, or None when it is unset or empty."""
    value = os.environ.get(ENV, "").strip()
    if not value:
        return None
    names = frozenset(value.replace(",", " ").lower().split())
    return frozenset() if names == {"none"} else names


def features() -> frozenset[str]:
    """The flags edgeml assumes this CPU has: the override, else those detected (empty when unknown)."""
    flags = assumed()
    if flags is None:
        flags = detected()
    return flags or frozenset()


def unrecognised() -> list[str]:
    """The names `$EDGEML_CPU_FEATURES` lists that are neither a flag edgeml knows (SHOWN, OTHER) nor one this
    CPU lists: probably typos (they are assumed all the same). Empty without the override."""
    flags = assumed()
    if not flags:
        return []
    return sorted(flags - set(SHOWN) - set(OTHER) - (detected() or frozenset()))


def unrecognised_warning(names: list[str]) -> str:
    return (f"${ENV} names {', '.join(names)}, which {'is no CPU flag' if len(names) == 1 else 'are no CPU flags'} "
            f"edgeml knows (a typo?); it assumes the flags as given, e.g. avx2,fma or "
            "avx2,avx512f,avx512_vnni,avx512_bf16 (`edgeml doctor` shows what it reads)")


def source() -> str:
    """Where `features()` came from: DETECTED, ASSUMED (the override) or UNKNOWN."""
    if assumed() is not None:
        return ASSUMED
    return DETECTED if detected() is not None else UNKNOWN


def architecture(machine: str | None = None) -> str:
    """x86 | arm | the machine name as `platform.machine()` gives it (lower case)."""
    machine = (machine or platform.machine()).lower()
    if machine in ("x86_64", "amd64", "i386", "i686", "x86"):
        return "x86"
    if machine.startswith(("aarch64", "arm")):
        return "arm"
    return machine or "unknown"


def shown(flags: frozenset[str] | None = None) -> list[str]:
    """The SHOWN flags among `flags` (default: `features()`), in SHOWN's order."""
    flags = features() if flags is None else flags
    return [f for f in SHOWN if f in flags]


def has_bf16(flags: frozenset[str] | None = None) -> bool:
    """BF16 instructions (AVX512-BF16, AMX-BF16, Arm BF16): without them bf16 is emulated, slower than f32."""
    flags = features() if flags is None else flags
    return any(f in flags for f in BF16)


def has_vnni(flags: frozenset[str] | None = None) -> bool:
    """INT8 dot products that accumulate in 32 bits, so cannot saturate: VNNI (AVX-512 or AVX), AMX-INT8,
    Arm's dot product (asimddp)."""
    flags = features() if flags is None else flags
    return any(f in flags for f in INT8_DOT)


def missing_bf16() -> str | None:
    """Why this CPU does not run bf16 natively, or None when it does."""
    if has_bf16():
        return None
    if source() == UNKNOWN:
        return "this CPU's features are unknown (no flags in /proc/cpuinfo): BF16 instructions not found"
    where = f"; features {ASSUMED}" if source() == ASSUMED else ""
    return f"this CPU has no BF16 instructions (AVX512-BF16, AMX or Arm BF16){where}"


@dataclass(frozen=True)
class CpuRule:
    """A candidate's `applies` rule that reads only this CPU, never the model: `edgeml targets` and
    doctor apply it without a model, so they agree with optimize."""
    reason: Callable[[], str | None]        # why this CPU does not suit the candidate, or None

    def __call__(self, model: Path | None = None) -> str | None:
        return self.reason()


@dataclass(frozen=True)
class Int8Scheme:
    """How INT8 weights are quantized for a CPU."""
    name: str                   # amx | vnni | no-vnni | arm | unknown
    avoid_saturation: bool      # 7-bit weights (ONNX Runtime's reduce_range), NNCF's overflow fix on the first layer
    reason: str                 # one line: the feature found and what follows from it

    def to_dict(self) -> dict:
        return asdict(self)


AVOID = "so weights use 7 bits (reduce_range) and NNCF's overflow fix on the first layer"
FULL = "so weights use the full 8-bit range (no reduce_range, no NNCF overflow fix)"


def int8_scheme(flags: frozenset[str] | None = None, machine: str | None = None) -> Int8Scheme:
    """The INT8 scheme for a CPU with `flags` on `machine` (defaults: this CPU, as `features()` and
    `platform.machine()` say)."""
    known = flags is not None or source() != UNKNOWN
    flags = features() if flags is None else flags
    arch = architecture(machine)
    found = [f for f in INT8_DOT if f in flags]
    if arch == "arm":
        dot = f"with its dot product ({found[0]})" if found else "without a dot product (asimddp)"
        return Int8Scheme("arm", False, f"an Arm CPU {dot}: its int8 kernels accumulate in 32 bits and do not "
                                        f"saturate, {FULL}")
    if arch == "x86" and found:
        name = "amx" if found[0] == "amx_int8" else "vnni"
        return Int8Scheme(name, False, f"this CPU has {found[0]}: its int8 dot products accumulate in 32 bits and "
                                       f"do not saturate, {FULL}")
    if arch == "x86" and known:
        isa = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "neither AVX2 nor AVX-512"
        return Int8Scheme("no-vnni", True, f"this CPU ({isa}) has no VNNI/AMX INT8 instructions: ONNX Runtime's "
                                           f"u8*s8 kernels (VPMADDUBSW) can saturate, {AVOID}")
    what = "this CPU's features are unknown" if arch == "x86" else f"an architecture edgeml does not know ({arch})"
    return Int8Scheme("unknown", True, f"{what}: int8 products may saturate, {AVOID}")


def describe() -> dict:
    """This CPU as edgeml sees it, for doctor and reports: architecture, the SHOWN features, where they
    came from, and the INT8 scheme."""
    return {"architecture": architecture(), "features": shown() if source() != UNKNOWN else None,
            "features_from": source(), "unrecognised": unrecognised(), "int8_scheme": int8_scheme().to_dict()}
