"""P8 extra: do evaluation batches in bf16 pay? The evaluation a preset's epoch runs (its train_clean
sample every epoch, its test sample on evaluation epochs), timed in fp32 and under bf16 autocast,
interleaved, in the memory format the preset runs in, with alexlab's evaluation batches.

Under trainer.precision=bf16-mixed (what `auto` picks on a CPU with bf16 hardware) alexlab
evaluates under bf16 autocast, as it trains. Evaluating in fp32 instead would cost the time
below and change no training step; bf16 predictions may differ from fp32 ones near a tie.
With --run-dir (a finished run of the preset) the network has that run's weights, and the
script also prints how many predictions and how much accuracy the two precisions differ by.

    .venv/bin/python benchmarks/eval_batches.py                              # fmnist_quick, untrained net
    .venv/bin/python benchmarks/eval_batches.py --run-dir runs/fmnist_quick/default

Only a CPU with bf16 hardware (AMX-BF16 / AVX512-BF16) gives a meaningful figure: elsewhere bf16
is emulated and many times slower (the script says so). Last line: `eval_bf16_speedup=<fp32 time
/ bf16 time>`.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import compose, eval_batch_size, header, pick_device, summary, time_call  # noqa: E402

from alexlab.data.augment import center_crop  # noqa: E402
from alexlab.precision import hardware_mode, run_mode  # noqa: E402
from alexlab.train import build  # noqa: E402


def load_weights(net: torch.nn.Module, run_dir: Path) -> None:
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    net.load_state_dict({k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")})


def main(argv=None) -> float:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--experiment", default="fmnist_quick")
    p.add_argument("--run-dir", type=Path, help="a finished run of the preset: its weights, and the prediction check")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--rounds", type=int, default=6, help="timed rounds of each precision, after one warm-up round")
    p.add_argument("--clock", default="wall", choices=["wall", "cpu"])
    p.add_argument("--override", action="append", default=[], help="extra alexlab config override (repeatable)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    with tempfile.TemporaryDirectory(prefix="alexlab-eval-") as tmp:
        cfg = compose([f"experiment={args.experiment}", f"paths.data={Path(tmp) / 'data'}", "data.download=false",
                       *args.override])
        dm, net, _ = build(cfg)
    mode, fast = run_mode(cfg), hardware_mode(device.type)
    if args.run_dir:
        load_weights(net, args.run_dir)
    net.to(device).eval()
    if mode.channels_last:
        net.to(memory_format=torch.channels_last)
    transform, size = dm.transform.to(device), dm.image_size
    batch = eval_batch_size(cfg.data.batch_size, device)
    sets = {"train_clean": (dm.clean_x, dm.clean_y), "test": (dm.test_x, dm.test_y)}
    print(header(device, f"evaluation batches {args.experiment}: {cfg.model.name} w{cfg.model.width}, "
                         f"{', '.join(f'{k} {len(v[0])}' for k, v in sets.items())} images in batches of {batch}, "
                         f"{'channels_last' if mode.channels_last else 'NCHW'}, {args.clock} clock"))
    if not fast.precision.startswith("bf16"):
        print(f"note: {fast.why.removeprefix('auto: ')}: bf16 is emulated here, so this figure says nothing about "
              "a CPU with bf16 hardware")

    def views(x):
        for i in range(0, len(x), batch):
            v = center_crop(transform.eval_view(x[i:i + batch].to(device)), size)
            yield v.contiguous(memory_format=torch.channels_last) if mode.channels_last else v

    def predictions(name: str, bf16: bool) -> torch.Tensor:
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            return torch.cat([net(v).float().argmax(1) for v in views(sets[name][0])])

    times = {(name, bf16): [] for name in sets for bf16 in (False, True)}
    for r in range(args.rounds + 1):
        for key in (list(times) if r % 2 == 0 else list(times)[::-1]):
            t = time_call(lambda: predictions(*key), device, args.clock == "cpu")
            if r > 0:
                times[key].append(t)
    total = {bf16: 0.0 for bf16 in (False, True)}
    for (name, bf16), values in times.items():
        s = summary(values)
        total[bf16] += s["median"]
        print(f"{name:12s} {'bf16 autocast' if bf16 else 'fp32':14s} {s['median'] * 1e3:8.1f} ms a pass "
              f"(min {s['min'] * 1e3:.1f}, spread {s['spread']:.0%})")
    if args.run_dir:
        for name, (_, labels) in sets.items():
            fp32, bf16 = predictions(name, False), predictions(name, True)
            print(f"{name}: {int((fp32 != bf16).sum())} of {len(labels)} predictions differ; accuracy fp32 "
                  f"{float((fp32 == labels).float().mean()):.4f}, bf16 {float((bf16 == labels).float().mean()):.4f}")
    speedup = total[False] / total[True]
    print(f"eval_bf16_speedup={speedup:.3f}")
    return speedup


if __name__ == "__main__":
    main()
