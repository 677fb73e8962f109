"""The numeric mode a run trains in: precision (fp32 or bf16 autocast) and memory format (NCHW or
channels_last), with `auto` chosen from the hardware.

`trainer.precision=auto` and `model.channels_last=auto` (the CPU trainer preset and the
fmnist_quick demo set both) resolve here, the same way every time on the same machine:

- a CPU with bf16 in hardware (AMX-BF16 or AVX512-BF16: Sapphire Rapids and later Xeons, Zen 4
  and later EPYCs): bf16 autocast + channels_last, which oneDNN runs on those units;
- any other x86 CPU: fp32 + NCHW. Without bf16 hardware, bf16 autocast is emulated and many times
  slower than fp32 (~15x on an AVX2 Zen 2). channels_last trains the fmnist_quick net 1.46x faster
  there, but its same-science check (5 seeds, paired: the gap's 95% interval inside +-1 pt) failed
  narrowly ([-0.89, +1.19] pt), so it is not chosen for you: `model.channels_last=true` asks for it
  (docs/PERFORMANCE.md, P8);
- another CPU architecture: fp32 + NCHW (neither measured there);
- a CUDA GPU: bf16 autocast + channels_last where it has bf16 (what `trainer=gpu` and the README
  recommend), else fp32 + NCHW; Apple MPS: fp32 + NCHW.

Explicit values are kept (`trainer.precision=32-true` forces fp32, `model.channels_last=false`
NCHW). config.yaml keeps `auto`; summary.json records what ran (`record()`), and the run prints
one line saying what was chosen and why (`Mode.line`).
"""
from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

AUTO = "auto"
CPUINFO = Path("/proc/cpuinfo")  # the fallback's source, when torch has no capability table
FP32, BF16_MIXED = "32-true", "bf16-mixed"
# CPU features with which oneDNN runs bf16 matrix products in hardware (torch's and /proc/cpuinfo's names)
BF16_CPU_FEATURES = {"amx_bf16": "AMX-BF16", "avx512_bf16": "AVX512-BF16"}
X86 = ("x86_64", "amd64", "x86", "i386", "i686")
PRECISION_NAMES = {"32-true": "fp32", "32": "fp32", "bf16-mixed": "bf16 autocast", "16-mixed": "fp16 autocast",
                   "bf16-true": "bf16"}


@dataclass(frozen=True)
class Mode:
    precision: str       # what Lightning's Trainer gets
    channels_last: bool  # NHWC weights and activations
    why: str             # what decided it, for the start line
    automatic: bool = True  # False when the config set both keys (nothing was chosen)

    def line(self) -> str:
        layout = "channels_last" if self.channels_last else "NCHW"
        return f"alexlab: {PRECISION_NAMES.get(self.precision, self.precision)}, {layout} ({self.why})"

    def record(self) -> dict:
        """summary.json's record of what ran (config.yaml may say `auto`)."""
        return {"precision_used": self.precision, "channels_last_used": self.channels_last}


def cpu_fast_mode(features: Mapping[str, Any], vector_isa: str = "") -> Mode:
    """The fastest CPU mode for a CPU with these features (torch.cpu.get_capabilities()'s keys:
    flag -> bool, and `architecture`); `vector_isa` only names it in the reason (AVX2, AVX512)."""
    bf16 = [name for flag, name in BF16_CPU_FEATURES.items() if features.get(flag)]
    if bf16:
        return Mode(BF16_MIXED, True, f"auto: CPU with hardware bf16, {', '.join(bf16)}")
    isa = f", {vector_isa}" if vector_isa else ""
    if str(features.get("architecture", "")).lower() in X86:
        # channels_last is faster here but did not pass the same-science check: NCHW (see the docstring)
        return Mode(FP32, False, f"auto: CPU without hardware bf16{isa}")
    return Mode(FP32, False, f"auto: {features.get('architecture') or 'unknown'} CPU, where bf16 and "
                             f"channels_last were not measured{isa}")


def gpu_fast_mode(bf16_supported: bool, name: str = "CUDA GPU") -> Mode:
    if bf16_supported:
        return Mode(BF16_MIXED, True, f"auto: {name} with bf16")
    return Mode(FP32, False, f"auto: {name} without bf16")


def cpu_features() -> Mapping[str, Any]:
    """torch's view of this CPU (torch.cpu.get_capabilities, in recent torch), else the flags of
    /proc/cpuinfo, which use the same names."""
    if hasattr(torch.cpu, "get_capabilities"):
        return torch.cpu.get_capabilities()
    try:
        text = CPUINFO.read_text()
    except OSError:
        text = ""
    return {**cpuinfo_flags(text), "architecture": platform.machine()}


def cpuinfo_flags(text: str) -> dict[str, bool]:
    """{flag: True} for the first `flags` (x86) or `Features` (ARM) line of /proc/cpuinfo."""
    for line in text.splitlines():
        if line.startswith(("flags", "Features")) and ":" in line:
            return {flag: True for flag in line.split(":", 1)[1].split()}
    return {}


def device_kind(accelerator: str) -> str:
    """cuda, mps or cpu: what the run trains on (`auto`: a visible GPU, as Lightning picks it)."""
    if accelerator in ("gpu", "cuda"):
        return "cuda"
    if accelerator in ("cpu", "mps"):
        return accelerator
    if torch.cuda.is_available():
        return "cuda"
    return "mps" if torch.backends.mps.is_available() else "cpu"


def hardware_mode(accelerator: str) -> Mode:
    """The fast mode of the device this run trains on."""
    kind = device_kind(accelerator)
    if kind == "cuda":
        return gpu_fast_mode(torch.cuda.is_bf16_supported(including_emulation=False), torch.cuda.get_device_name())
    if kind == "mps":
        return Mode(FP32, False, "auto: Apple MPS, where bf16 and channels_last were not measured")
    return cpu_fast_mode(cpu_features(), torch.backends.cpu.get_cpu_capability())


def is_auto(value) -> bool:
    return str(value).lower() == AUTO


def run_mode(cfg) -> Mode:
    """The mode `cfg` trains in: its explicit trainer.precision and model.channels_last, and what
    this machine runs fastest for a key that says `auto`."""
    precision, layout = str(cfg.trainer.precision), cfg.model.channels_last
    explicit_precision = FP32 if precision == "32" else precision
    explicit_layout = str(layout).lower() == "true"  # a bool, or the command line's 'True' in a str field
    if not is_auto(precision) and not is_auto(layout):
        return Mode(explicit_precision, explicit_layout, "as set", automatic=False)
    fast = hardware_mode(str(cfg.trainer.accelerator))
    kept = [f"{key}={value} as set" for key, value, auto in (("trainer.precision", precision, is_auto(precision)),
                                                              ("model.channels_last", layout, is_auto(layout)))
            if not auto]
    return Mode(fast.precision if is_auto(precision) else explicit_precision,
                fast.channels_last if is_auto(layout) else explicit_layout, "; ".join([fast.why, *kept]))
