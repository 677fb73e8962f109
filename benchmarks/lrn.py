"""P6: what the paper's LRN costs. Forward+backward time per call of alexlab's LocalResponseNorm,
the slice-sum version it replaced, torch.nn.LocalResponseNorm and no LRN (a copy), on the LRN
inputs of alexnet_small (width 0.25, 32 px) and of the 227-px net; then LRN's share of a full
training step (goal <= 15%), from the same model with and without LRN, interleaved.

    .venv/bin/python benchmarks/lrn.py                       # CPU, ~1 minute
    .venv/bin/python benchmarks/lrn.py --channels-last       # CPU fast mode: NHWC inputs and models
    .venv/bin/python benchmarks/lrn.py --channels-last --dtype bf16   # CPUs with AMX / AVX512-BF16
    .venv/bin/python benchmarks/lrn.py --fast --batch-small 32 --skip-227  # this machine's fast mode (P8),
                                                             # as trainer.precision=auto model.channels_last=auto pick it
    .venv/bin/python benchmarks/lrn.py --device cuda --batch-227 128 --dtype bf16
On a CPU, float32 and bf16 inputs in either memory format take the fused C kernel (the check line
says so). Last line: `lrn_share_small=<x> lrn_share_227=<y>` (fractions of a training step).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import header, pick_device, summary, sync, time_call  # noqa: E402

from alexlab.models import build_model  # noqa: E402
from alexlab.models import lrn_cpu  # noqa: E402
from alexlab.models.lrn import local_response_norm  # noqa: E402
from alexlab.precision import hardware_mode  # noqa: E402


def lrn_slices(x, size=5, alpha=1e-4, beta=0.75, k=2.0):
    """The first implementation (plain autograd over n shifted slices of the padded squares)."""
    half, channels = size // 2, x.shape[1]
    padded = F.pad(x * x, (0, 0, 0, 0, half, half))
    window = padded[:, 0:channels]
    for offset in range(1, 2 * half + 1):
        window = window + padded[:, offset:offset + channels]
    return x / (k + alpha * window).pow(beta)


def lrn_pytorch_ops(x):
    """alexlab's LRN without the fused C kernel (what runs where no C compiler is found)."""
    with lrn_cpu.disabled():
        return local_response_norm(x)


def lrn_formula(a, n=5, alpha=1e-4, beta=0.75, k=2.0):
    """docs/PAPER.md (the paper's Section 3.3) as a direct loop over channels (the reference)."""
    channels, b = a.shape[1], torch.empty_like(a)
    for i in range(channels):
        lo, hi = max(0, i - n // 2), min(channels - 1, i + n // 2)
        b[:, i] = a[:, i] / (k + alpha * sum(a[:, j] ** 2 for j in range(lo, hi + 1))) ** beta
    return b


IMPLEMENTATIONS = {
    "alexlab": local_response_norm,
    "alexlab_torch_ops": lrn_pytorch_ops,
    "slices": lrn_slices,
    "torch": torch.nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0),  # alpha/n convention
    "none": lambda x: x.clone(),
}


def check_exact(dtype=torch.float64, memory_format=torch.contiguous_format) -> float:
    """Largest relative difference of alexlab's LRN (value and gradient of sum(out**2)) from the direct
    loop in float64 on the same input and output gradient (both in `dtype`); gradients relative to
    at least eps(dtype) x the largest (smaller ones are differences of rounded terms). float32 and
    bf16 inputs on a CPU take the fused C kernel when it is built (bf16 is computed in float32 and
    rounded once: ~2**-8)."""
    a = (torch.randn(3, 13, 5, 5, dtype=torch.float64) * 20).to(dtype).contiguous(memory_format=memory_format)
    a.requires_grad_()
    ref_in = a.detach().double().requires_grad_()
    out, ref = local_response_norm(a), lrn_formula(ref_in)
    g = 2 * out.detach()  # what sum(out**2) sends back, in dtype
    out.backward(g)
    ref.backward(g.double())

    def rel(u, v, floor):
        return ((u.double() - v).abs() / v.abs().clamp_min(floor)).max().item()

    floor = max(torch.finfo(dtype).eps * ref_in.grad.abs().max().item(), 1e-12)
    return max(rel(out.detach(), ref.detach(), 1e-12), rel(a.grad, ref_in.grad, floor))


def per_call(shapes: dict, device, dtype, rounds: int, cpu_clock: bool = False, channels_last: bool = False) -> dict:
    """{shape name: {impl: timing summary}} for forward+backward of one LRN call."""
    results = {}
    for name, shape in shapes.items():
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        x = torch.randn(shape, device=device).relu_().mul_(3).to(dtype).contiguous(memory_format=fmt).requires_grad_()
        g = torch.randn(shape, device=device, dtype=dtype).contiguous(memory_format=fmt)

        def call(fn):
            x.grad = None
            fn(x).backward(g)

        usable = {}
        for impl, fn in IMPLEMENTATIONS.items():
            try:
                call(fn)
                usable[impl] = fn
            except (RuntimeError, NotImplementedError):  # torch's LRN has no bf16 CPU kernel
                pass
        times = {impl: [] for impl in usable}
        for r in range(rounds + 2):
            order = list(usable.items())
            for impl, fn in (order if r % 2 == 0 else order[::-1]):
                t = time_call(lambda: call(fn), device, cpu_clock)
                if r >= 2:  # two warm-up rounds
                    times[impl].append(t)
        results[name] = {impl: summary(times[impl]) if impl in times else None for impl in IMPLEMENTATIONS}
    return results


def step_share(variant: str, image_size: int, in_channels: int, width: float, batch: int, device, dtype,
               rounds: int, cpu_clock: bool = False, compile: bool = False, channels_last: bool = False) -> dict:
    """Training-step time with and without LRN (same model otherwise), interleaved."""
    models = {}
    for lrn in (True, False):
        torch.manual_seed(0)
        net = build_model({"name": variant, "width": width, "norm": "lrn" if lrn else "none", "init": "default",
                           "groups": 2 if variant == "alexnet" else 1}, 10, in_channels, image_size).to(device)
        if channels_last:
            net.to(memory_format=torch.channels_last)
        models[lrn] = (torch.compile(net) if compile else net,
                       torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4))
    x = torch.randn(batch, in_channels, image_size, image_size, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,), device=device)

    def step(lrn):
        net, opt = models[lrn]
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            loss = F.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    times = {True: [], False: []}
    for r in range(rounds + 2):
        for lrn in ((True, False) if r % 2 == 0 else (False, True)):
            t = time_call(lambda: step(lrn), device, cpu_clock)
            if r >= 2:
                times[lrn].append(t)
    on, off = summary(times[True]), summary(times[False])
    return {"with_lrn": on, "without_lrn": off, "share": 1 - off["median"] / on["median"]}


def main(argv=None) -> str:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"], help="bf16: autocast, as trainer.precision=bf16-mixed")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--batch-small", type=int, default=128)
    p.add_argument("--batch-227", type=int, default=16, help="CPU default 16; use 128 on a GPU")
    p.add_argument("--rounds", type=int, default=10, help="timed repetitions of each variant")
    p.add_argument("--skip-227", action="store_true")
    p.add_argument("--compile", action="store_true", help="also time torch.compile'd LRN; compile the step's models")
    p.add_argument("--channels-last", action="store_true", help="channels_last inputs and models")
    p.add_argument("--fast", action="store_true", help="the mode `auto` picks on this machine (dtype and layout; "
                                                       "overrides --dtype and --channels-last)")
    p.add_argument("--clock", default="wall", choices=["wall", "cpu"],
                   help="CPU only: cpu = process CPU time (use with --threads 1 on a shared machine)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    if args.fast:
        mode = hardware_mode(device.type)
        print(f"fast mode: {mode.line().removeprefix('alexlab: ')}")
        args.dtype, args.channels_last = ("bf16" if mode.precision.startswith("bf16") else "fp32"), mode.channels_last
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    print(header(device, f"LRN forward+backward, {args.dtype}, {args.clock} clock"
                         f"{', channels_last' if args.channels_last else ''}{', compiled step' if args.compile else ''}"))
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    sample = torch.empty(2, 8, 3, 3, dtype=dtype, device=device).contiguous(memory_format=fmt)
    mode = f"{args.dtype}{'_channels_last' if args.channels_last else ''}"
    checks = {"float64": check_exact(), "float32": check_exact(torch.float32)}
    if mode != "fp32" and device.type == "cpu":  # the benchmarked mode, if it is another one
        checks[mode] = check_exact(dtype, fmt)
    print("check: max relative difference from the paper's direct loop (value, gradient): "
          + " ".join(f"{name}={value:.1e}" for name, value in checks.items())
          + (f" ({mode} through the fused C kernel)" if lrn_cpu.usable(sample)
             else f" ({mode} through the PyTorch ops{'' if lrn_cpu.library() else ', no C compiler'})"))

    b, B = args.batch_small, args.batch_227
    shapes = {f"small conv1 ({b},24,32,32)": (b, 24, 32, 32), f"small conv2 ({b},64,16,16)": (b, 64, 16, 16)}
    if not args.skip_227:
        shapes.update({f"227 conv1 ({B},96,55,55)": (B, 96, 55, 55), f"227 conv2 ({B},256,27,27)": (B, 256, 27, 27)})
    if args.compile:
        IMPLEMENTATIONS["compiled"] = torch.compile(local_response_norm)
    calls = per_call(shapes, device, dtype, args.rounds, args.clock == "cpu", args.channels_last)
    print(f"\nper call, ms (median; min; spread = IQR/median over {args.rounds} interleaved rounds)")
    print(f"{'input':32s}" + "".join(f"{impl:>22s}" for impl in calls[next(iter(calls))]))
    for name, row in calls.items():
        print(f"{name:32s}" + "".join(f"{s['median'] * 1e3:9.2f};{s['min'] * 1e3:7.2f};{s['spread']:4.0%}"
                                      if s else f"{'n/a':>22s}" for s in row.values()))

    steps = {"small": ("alexnet_small", 32, 1, 0.25, b)}
    if not args.skip_227:
        steps["227"] = ("alexnet", 227, 3, 1.0, B)
    print("\nfull training step (SGD), ms (median; min): with alexlab LRN, without LRN -> LRN share")
    shares = {}
    for key, (variant, size, cin, width, batch) in steps.items():
        r = step_share(variant, size, cin, width, batch, device, dtype, max(4, args.rounds // 2), args.clock == "cpu",
                       args.compile, args.channels_last)
        lrn_calls = sum(v["alexlab"]["median"] - v["none"]["median"] for k, v in calls.items() if k.startswith(key))
        shares[key] = r["share"]
        print(f"{variant} w{width} {size}px b{batch}: {r['with_lrn']['median'] * 1e3:.1f};{r['with_lrn']['min'] * 1e3:.1f}"
              f"  {r['without_lrn']['median'] * 1e3:.1f};{r['without_lrn']['min'] * 1e3:.1f}"
              f"  -> share {r['share']:.1%} (from per-call times: {lrn_calls / r['with_lrn']['median']:.1%})")
    sync(device)
    last = " ".join(f"lrn_share_{k}={v:.3f}" for k, v in shares.items())
    print(last)
    return last


if __name__ == "__main__":
    main()
