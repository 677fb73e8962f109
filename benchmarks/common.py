"""Shared pieces of the benchmark scripts: device clocks, robust statistics, a header line.

Benchmarks warm up, then time only what they claim to time, interleave the variants they
compare (A B B A ...) so that load from other processes hits all of them alike, and print
ratios measured in the same process.
"""
from __future__ import annotations

import platform
import statistics
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def compose(overrides: list[str]):
    """The config `alexlab-train <overrides>` would run."""
    from hydra import compose as hydra_compose, initialize_config_dir

    import alexlab.config  # noqa: F401  schema and resolvers
    from alexlab.config import conf_dir

    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=overrides)


def eval_batch_size(batch_size: int, device: torch.device) -> int:
    """alexlab's evaluation batch for in-memory sets (AlexDataModule._tensor_loader): 4 training
    batches, on a CPU at most 128 images (or one training batch)."""
    from alexlab.data.datamodules import CPU_EVAL_BATCH, EVAL_BATCH_FACTOR

    size = batch_size * EVAL_BATCH_FACTOR
    return min(size, max(batch_size, CPU_EVAL_BATCH)) if device.type == "cpu" else size


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {name}: no CUDA device is visible")
    return torch.device(name)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def clock(device: torch.device) -> float:
    """Wall time after everything queued on the device has finished."""
    sync(device)
    return time.perf_counter()


def time_call(fn, device: torch.device, cpu_clock: bool = False) -> float:
    """Seconds one call of fn takes (CUDA events on a GPU; with cpu_clock, this process's CPU
    time, the steadier measure on a shared CPU when torch runs one thread)."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    now = time.process_time if cpu_clock else time.perf_counter
    start = now()
    fn()
    return now() - start


def summary(values: list[float]) -> dict:
    """min, median and the relative spread (interquartile range / median) of repeated timings."""
    v = sorted(values)
    med = statistics.median(v)
    q1, q3 = v[len(v) // 4], v[(3 * len(v)) // 4]
    return {"min": v[0], "median": med, "spread": (q3 - q1) / med if med else 0.0, "n": len(v)}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def header(device: torch.device, what: str) -> str:
    return (f"# {what} | {device_name(device)} | torch {torch.__version__} | "
            f"{time.strftime('%Y-%m-%d %H:%M')}")
