"""The fused CPU kernel for the paper's LRN (lrn_cpu.c): built on first use, cached, called via ctypes.

On a CPU the eager LRN (lrn.py) is a dozen elementwise passes over the activations; the C kernel
is one pass forward and one backward, ~2-3x faster (docs/PERFORMANCE.md, P6). It needs a C
compiler (`cc`, or $CC) at run time, not at install time: the first LRN call compiles it
(~1 s) into ~/.cache/alexlab (or $ALEXLAB_CACHE_DIR), keyed by the source, the compiler and the
CPU's flags, so a cluster's shared home directory holds one build per kind of node.

Without a compiler, or with ALEXLAB_LRN_KERNEL=torch, lrn.py uses its PyTorch version: the same
function, equal to float32 rounding. CPU tensors of float32 or bfloat16 (bf16 autocast: computed in
float32, rounded once at the end), contiguous in NCHW or in channels_last (NHWC), take this path;
outputs and gradients keep the input's memory format, so the next convolution stays channels_last.
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import logging
import os
import platform
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

from ..settings import cache_root

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("lrn_cpu.c")
ENV = "ALEXLAB_LRN_KERNEL"  # auto (default): build it if a compiler exists | torch: never use it
FLAG_SETS = (["-O3", "-march=native", "-ffast-math"], ["-O3", "-ffast-math"])  # second: compilers without -march=native


_disabled = False


@contextlib.contextmanager
def disabled():
    """Inside this block LRN takes the PyTorch path (benchmarks and tests compare the two)."""
    global _disabled
    before, _disabled = _disabled, True
    try:
        yield
    finally:
        _disabled = before


DTYPES = {torch.float32: 0, torch.bfloat16: 1}  # the kernel's `bf16` argument


def usable(x: torch.Tensor) -> bool:
    return (not _disabled and x.device.type == "cpu" and x.dtype in DTYPES and x.dim() >= 2
            and memory_format(x) is not None and not torch.compiler.is_compiling() and library() is not None)


def memory_format(x: torch.Tensor) -> torch.memory_format | None:
    """The layout the kernel reads x in: NCHW (first, also when both hold, e.g. one channel), NHWC, or None."""
    if x.is_contiguous():
        return torch.contiguous_format
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return None


def forward(x: torch.Tensor, half: int, alpha: float, beta: float, k: float) -> torch.Tensor:
    y = torch.empty_like(x)  # same strides as x, so the kernel writes y in x's layout
    _call(library().lrn_forward, (x, y), x, half, alpha, beta, k)
    return y


def backward(x: torch.Tensor, g: torch.Tensor, half: int, alpha: float, beta: float, k: float) -> torch.Tensor:
    dx = torch.empty_like(x)
    g = g.to(x.dtype).contiguous(memory_format=memory_format(x))  # e.g. the stride-0 gradient of a sum()
    _call(library().lrn_backward, (x, g, dx), x, half, alpha, beta, k)
    return dx


def _call(fn, tensors, x, half, alpha, beta, k) -> None:
    if x.numel() == 0:
        return
    n, c, hw = x.shape[0], x.shape[1], x[0, 0].numel()
    if fn(*(t.data_ptr() for t in tensors), n, c, hw, half, alpha, beta, k,
          memory_format(x) == torch.channels_last, DTYPES[x.dtype], torch.get_num_threads()):
        raise MemoryError(f"LRN kernel: could not allocate its {c}-channel work buffer")


@functools.cache
def library() -> ctypes.CDLL | None:
    """The loaded kernel, or None (and one warning saying why) when it cannot be built here."""
    choice = os.environ.get(ENV, "auto")
    if choice not in ("auto", "torch"):
        from ..errors import AlexlabError
        raise AlexlabError(f"{ENV}={choice!r} is not valid; use auto (build the fused CPU LRN if a C compiler "
                           "exists) or torch (never)")
    if choice == "torch":
        return None
    try:
        lib = _load()
    except (OSError, RuntimeError, subprocess.SubprocessError) as e:
        log.warning("alexlab: fused CPU LRN not available (%s); using the PyTorch version (same values, "
                    "~2-3x slower on a CPU). %s=torch silences this.", str(e).splitlines()[0], ENV)
        return None
    i64, f32, ptr = ctypes.c_int64, ctypes.c_float, ctypes.c_void_p
    flags = [ctypes.c_int] * 3  # channels_last, bf16, threads
    lib.lrn_forward.argtypes = [ptr, ptr, i64, i64, i64, i64, f32, f32, f32, *flags]
    lib.lrn_backward.argtypes = [ptr, ptr, ptr, i64, i64, i64, i64, f32, f32, f32, *flags]
    lib.lrn_forward.restype = lib.lrn_backward.restype = ctypes.c_int
    return lib


def _load() -> ctypes.CDLL:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        raise RuntimeError("no C compiler (cc, gcc or clang) on PATH")
    version = subprocess.run([cc, "--version"], capture_output=True, timeout=30).stdout
    runtime = openmp_runtime()
    key = hashlib.sha256(b"\0".join([SOURCE.read_bytes(), version, repr(FLAG_SETS).encode(),
                                      _cpu_id().encode(), str(runtime).encode()])).hexdigest()
    path = cache_dir() / f"lrn_cpu-{key[:16]}.so"
    if path.exists():
        try:
            return ctypes.CDLL(str(path))
        except OSError:  # truncated or foreign file: build it again
            path.unlink(missing_ok=True)
    _compile(cc, runtime, path)
    return ctypes.CDLL(str(path))


def _compile(cc: str, runtime: str | None, path: Path) -> None:
    """Compile, then link against torch's OpenMP runtime (or none: one thread), into a temporary
    file beside `path`, then rename: concurrent trials never load half a library."""
    tmp, obj = (path.with_name(f".{path.name}.{os.getpid()}.{ext}") for ext in ("tmp", "o"))
    attempts = [(flags, omp) for flags in FLAG_SETS for omp in ((True, False) if runtime else (False,))]
    error = ""
    try:
        for flags, omp in attempts:
            steps = [[cc, *flags, *(["-fopenmp"] if omp else ["-Wno-unknown-pragmas"]), "-fPIC", "-c",
                      "-o", str(obj), str(SOURCE)],
                     [cc, "-shared", "-o", str(tmp), str(obj), *([runtime] if omp else []), "-lm"]]
            for step in steps:
                done = subprocess.run(step, capture_output=True, text=True, timeout=120)
                if done.returncode:
                    error = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
                    break
            else:
                try:  # e.g. clang's OpenMP calls linked against torch's libgomp: links, then fails to load
                    ctypes.CDLL(str(tmp))
                except OSError as err:
                    error = str(err)
                    continue
                os.replace(tmp, path)
                return
    finally:
        tmp.unlink(missing_ok=True)
        obj.unlink(missing_ok=True)
    raise RuntimeError(f"{cc} could not build {SOURCE.name}: {error}")


def openmp_runtime() -> str | None:
    """The OpenMP runtime this process has loaded (torch's libgomp, libomp or libiomp5), if any."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:  # not Linux: build without OpenMP
        return None
    for line in maps.splitlines():
        path = line.split(maxsplit=5)[-1] if line.count(" ") >= 5 else ""
        if re.match(r"lib(gomp|omp|iomp5)[-.]", Path(path).name):
            return path
    return None


def cache_dir() -> Path:
    root = cache_root()
    for folder in (Path(root), Path(tempfile.gettempdir()) / f"alexlab-{os.getuid() if hasattr(os, 'getuid') else 0}"):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            if os.access(folder, os.W_OK):
                return folder
        except OSError:
            continue
    raise RuntimeError(f"no writable cache folder ({root} or the temp folder)")


def _cpu_id() -> str:
    """What -march=native depends on: the CPU's feature flags (Linux), else the processor's name."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return f"{platform.machine()} {platform.processor()}"
