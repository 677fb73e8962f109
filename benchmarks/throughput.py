"""P1 and P8: alexlab's real training path against a minimal hand-written PyTorch loop, same work,
and against itself in fp32 NCHW.

Both sides train the same network (alexlab.train.build) on the same data and device, with the
same batch size, precision, memory format, compile flag and augmentation (the datamodule's
BatchTransform on the device), and evaluate the same train_clean/test images after each
epoch, in the same evaluation batches. alexlab runs through `alexlab.train.run(cfg)`
(Lightning Trainer, EpochRecorder with metrics.csv and last.ckpt every epoch, DivergenceGuard,
progress bar if asked); the hand loop is what one would write in an afternoon. With
`--baseline`, alexlab also runs in fp32 NCHW (or with the overrides given), in the same rounds.
Rounds alternate A B C / C B A so load from other processes on a shared machine falls on all
alike; the first round is a warm-up.

    .venv/bin/python benchmarks/throughput.py                               # alexnet_small, FMNIST, 32 px
    .venv/bin/python benchmarks/throughput.py --model alexnet --image-size 227 --batch-size 16 \\
        --train-images 64 --eval-images 16 --rounds 2                      # paper net, synthetic
    .venv/bin/python benchmarks/throughput.py --device cuda --precision bf16-mixed --channels-last
    .venv/bin/python benchmarks/throughput.py --experiment fmnist_quick --fast --baseline --rounds 3
        # P8: the demo's runs (whole, 25 epochs) in this machine's fastest mode (trainer.precision=auto,
        # model.channels_last=auto) vs the hand loop in that mode and vs alexlab in fp32 NCHW
    .venv/bin/python benchmarks/throughput.py --experiment fmnist_quick --fast --compile --skip-epochs 1 \\
        --sides alexlab --baseline model.compile=false                     # torch.compile in the fast mode

Last lines: `speedup=<alexlab / alexlab baseline images/s>` (with --baseline), then
`ratio=<alexlab images/s / hand-loop images/s>` (unless --sides alexlab, which prints
`images_per_s=` before them). Ratios are medians of the per-round ratios, each round timing every variant once.
"""
from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import clock, compose, eval_batch_size, header, pick_device, summary  # noqa: E402

import pytorch_lightning as pl  # noqa: E402

from alexlab.precision import run_mode  # noqa: E402

PAPER_FORWARD_GFLOP = 1.45  # the 227-px net, one image, multiply-adds counted as 2 FLOPs
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}  # dense
FP32_NCHW = ["trainer.precision=32-true", "model.channels_last=false"]  # --baseline's default: P8's reference


def run_overrides(args, work: Path) -> list[str]:
    """How and where the runs execute, and their numeric mode: the same for either kind of run."""
    mode = [f"trainer.precision={args.precision}", f"model.channels_last={args.channels_last}"]
    return mode + [f"trainer.progress_bar={str(args.progress_bar).lower()}",
                   f"model.compile={str(args.compile).lower()}", f"trainer.benchmark={str(args.cudnn_benchmark).lower()}",
                   f"trainer.accelerator={'gpu' if args.device.startswith('cuda') else args.device}",
                   f"trainer.threads={args.threads}", f"data.on_device={args.on_device}",
                   "logger=csv", f"paths.data={work / 'data'}", f"paths.runs={work / 'runs'}"]


def overrides_from(args, work: Path) -> list[str]:
    if args.experiment:  # the preset as it runs (its net, data, batch, evaluation schedule), whole runs
        epochs = [f"trainer.max_epochs={args.epochs}"] if args.epochs else []
        return [f"experiment={args.experiment}", *epochs, *run_overrides(args, work), "data.download=false",
                *args.override]
    o = [f"model={args.model}", f"data.batch_size={args.batch_size}", f"data.image_size={args.image_size}",
         f"trainer.max_epochs={args.epochs or 1}", *run_overrides(args, work),
         f"eval.train_clean_size={args.eval_images}", f"data.test_subset={args.eval_images}",
         "optim.schedule=none", "optim.warmup_epochs=0", "optim.lr=0.01", "model.init=default",
         "data.val_size=0"]  # the hand loop evaluates train_clean and test only
    if args.data == "synthetic":
        size = 256 if args.image_size > 64 else 32
        o += ["data=synthetic", f"data.num_train={args.train_images}", f"data.num_test={args.eval_images}",
              f"data.size={size}", f"data.num_classes={1000 if args.model == 'alexnet' else 10}",
              f"data.crop_padding={4 if size <= 64 else 0}"]
    else:
        o += [f"data={args.data}", f"data.train_subset={args.train_images}", "data.download=false"]
    if args.width:
        o.append(f"model.width={args.width}")
    return o + list(args.override)


class EpochClock(pl.Callback):
    """Device-synchronised marks per epoch: its start, the end of its last training step, and its
    end (after evaluation and after EpochRecorder has written metrics.csv and last.ckpt)."""

    def __init__(self, device):
        self.device, self.marks = device, []

    def on_train_epoch_start(self, trainer, pl_module):
        self.marks.append({"start": mark(self.device)})

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx + 1 == trainer.num_training_batches:
            self.marks[-1]["train_end"] = mark(self.device)

    def on_train_epoch_end(self, trainer, pl_module):
        self.marks[-1]["end"] = mark(self.device)


def mark(device) -> tuple[float, float]:
    """(wall time, this process's CPU time): on a shared CPU the second is the steadier measure
    of work done (use --threads 1; idle OpenMP threads spin and inflate it otherwise)."""
    return clock(device), time.process_time()


def quiet():
    """Keep the benchmark's own output readable: run() prints a summary table per run."""
    return contextlib.redirect_stdout(open(os.devnull, "w"))


def alexlab_round(cfg, device, profile: bool = False) -> list[dict]:
    from alexlab.train import run

    timer = EpochClock(device)
    profiler = cProfile.Profile() if profile else None
    with quiet():
        if profiler:
            profiler.enable()
        run(cfg, extra_callbacks=[timer])
        if profiler:
            profiler.disable()
    if profiler:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(30)
        print(out.getvalue(), file=sys.stderr)
    return timer.marks


def autocast(device, precision: str):
    if precision in ("32-true", "32"):
        return contextlib.nullcontext()
    if precision == "bf16-mixed":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    raise SystemExit(f"--precision {precision}: the hand loop does 32-true and bf16-mixed")


def evaluated(epoch: int, cfg) -> bool:
    """Whether alexlab evaluates the test set after this epoch: every eval.every_n_epochs, and the last."""
    return (epoch + 1) % cfg.eval.every_n_epochs == 0 or epoch + 1 == cfg.trainer.max_epochs


def hand_round(cfg, device) -> list[dict]:
    """The minimal loop: index uint8 tensors, BatchTransform, forward, loss, backward, SGD step;
    evaluate train_clean after each epoch and test when alexlab does (centre crop: loss, top-1, top-5)."""
    from alexlab.data.augment import center_crop
    from alexlab.train import build

    pl.seed_everything(cfg.seed, verbose=False)
    torch.backends.cudnn.benchmark = cfg.trainer.benchmark
    dm, net, _ = build(cfg)
    net.to(device)
    transform = dm.transform.to(device)
    mode = run_mode(cfg)  # trainer.precision / model.channels_last, `auto` resolved as alexlab resolves it
    channels_last = mode.channels_last
    if channels_last:
        net.to(memory_format=torch.channels_last)
    forward = torch.compile(net) if cfg.model.compile else net
    o = cfg.optim
    opt = torch.optim.SGD(net.parameters(), lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay,
                          nesterov=o.nesterov)
    data_device = torch.device("cpu") if str(cfg.data.on_device).lower() == "false" else device
    train_x, train_y = dm.train_x.to(data_device), dm.train_y.to(data_device)
    evals = [(dm.clean_x.to(data_device), dm.clean_y.to(data_device)),  # the train_clean sample alexlab evaluates
             (dm.test_x.to(data_device), dm.test_y.to(data_device))]
    bs, n, size = cfg.data.batch_size, len(train_x), dm.image_size
    eval_bs = eval_batch_size(bs, device)

    def prepare(x, y, train: bool):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        x = transform.train_batch(x) if train else center_crop(transform.eval_view(x), size)
        return (x.contiguous(memory_format=torch.channels_last) if channels_last else x), y

    marks = []
    for epoch in range(cfg.trainer.max_epochs):
        marks.append({"start": mark(device)})
        net.train()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        perm = torch.randperm(n, device=data_device)
        for i in range(0, n, bs):
            idx = perm[i:i + bs]
            x, y = prepare(train_x[idx], train_y[idx], True)
            with autocast(device, mode.precision):
                logits = forward(x)
                loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.detach() * len(y)
            correct += (logits.argmax(1) == y).sum()
        marks[-1]["train_end"] = mark(device)
        results = [float(loss_sum) / n, int(correct) / n]
        net.eval()
        with torch.no_grad(), autocast(device, mode.precision):
            for images, labels in evals[:2 if evaluated(epoch, cfg) else 1]:
                stats = torch.zeros(3, device=device)
                for i in range(0, len(images), eval_bs):
                    x, y = prepare(images[i:i + eval_bs], labels[i:i + eval_bs], False)
                    logits = forward(x).float()
                    top5 = logits.topk(min(5, logits.shape[1]), 1).indices
                    stats += torch.stack([F.cross_entropy(logits, y, reduction="sum"),
                                          (top5[:, 0] == y).sum(), (top5 == y[:, None]).any(1).sum()])
                results += (stats / max(1, len(images))).tolist()
        marks[-1]["end"] = mark(device)
    return marks


def data_pipeline_share(cfg, device, epochs: int = 2) -> dict:
    """P3: time of alexlab's data path alone (DataLoader over the in-memory tensors, IndexBatch,
    BatchTransform on the device) against the same loop that also trains, interleaved by epoch."""
    from alexlab.train import build

    dm, net, module = build(cfg)
    dm._device = lambda nbytes: device if str(cfg.data.on_device).lower() != "false" else torch.device("cpu")
    module.to(device)
    loader = dm.train_dataloader()
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    forward, mode = module.forward_fn, run_mode(cfg)

    def epoch(train: bool) -> float:
        start = clock(device)
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            x = module.transform.train_batch(x)
            if mode.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            if train:
                with autocast(device, mode.precision):
                    loss = F.cross_entropy(forward(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        return clock(device) - start

    epoch(True)  # warm-up
    data, full = [], []
    for _ in range(epochs):
        data.append(epoch(False))
        full.append(epoch(True))
    return {"data_s": min(data), "step_s": min(full), "share": min(data) / min(full)}


def peak_tflops(device, given: float) -> float | None:
    if given:
        return given
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def forward_flops(cfg) -> float:
    """FLOPs of one image's forward pass, counted by torch (convolutions and matrix products)."""
    from torch.utils.flop_counter import FlopCounterMode

    from alexlab.train import build

    _, net, _ = build(cfg)
    size = cfg.data.image_size or 32
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net.eval()(torch.zeros(1, net.features[0].in_channels, size, size))
    return float(counter.get_total_flops())


def report_extras(args, cfg, device, a: dict) -> None:
    if args.data_share:
        s = data_pipeline_share(cfg, device)
        print(f"data pipeline: {s['data_s'] * 1e3:.1f} ms of a {s['step_s'] * 1e3:.1f} ms epoch loop "
              f"-> data_share={s['share']:.3f}")
    if args.mfu:
        flops = forward_flops(cfg)
        peak = peak_tflops(device, args.peak_tflops)
        achieved = a["median"] * 3 * flops / 1e12
        paper = a["median"] * 3 * PAPER_FORWARD_GFLOP / 1e3
        line = (f"model: {flops / 1e9:.3f} GFLOP/img forward (counted), x3 for training -> "
                f"{achieved:.1f} TFLOP/s achieved ({paper:.1f} at the paper's {PAPER_FORWARD_GFLOP} GFLOP)")
        if peak:
            line += f"; peak {peak:.0f} TFLOP/s -> mfu={achieved / peak:.3f}"
        print(line)


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--experiment", default="", help="time whole runs of this preset as it runs (fmnist_quick: the "
                                                     "demo's net, data, batch and evaluation schedule); "
                                                     "--model/--data/--*-images/--batch-size are then ignored")
    p.add_argument("--model", default="alexnet_small", choices=["alexnet_small", "alexnet", "convnet4"])
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--width", type=float, default=0.0, help="model.width (0: the model preset's)")
    p.add_argument("--data", default="", help="fashion_mnist | cifar10 | synthetic (default: fashion_mnist "
                                              "for 32 px, synthetic for the 227-px net)")
    p.add_argument("--train-images", type=int, default=2048, help="training images per epoch")
    p.add_argument("--eval-images", type=int, default=512, help="train_clean and test images evaluated per epoch")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=0, help="epochs per round (default 1; with --experiment, the preset's)")
    p.add_argument("--skip-epochs", type=int, default=0, help="untimed first epochs of every round (compile)")
    p.add_argument("--rounds", type=int, default=4, help="timed rounds of each side, after one warm-up round")
    p.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--precision", default="32-true", help="32-true | bf16-mixed | auto (this machine's fastest)")
    p.add_argument("--channels-last", nargs="?", const="true", default="false", choices=["true", "false", "auto"],
                   help="model.channels_last (the flag alone: true)")
    p.add_argument("--fast", action="store_true", help="this machine's fastest mode: --precision auto --channels-last auto")
    p.add_argument("--baseline", nargs="*", default=None, metavar="OVERRIDE",
                   help="also time alexlab with these overrides in the same rounds (none given: fp32 NCHW, "
                        f"{' '.join(FP32_NCHW)}) and print speedup= (P8)")
    p.add_argument("--compile", action="store_true", help="model.compile=true (torch.compile) on both sides")
    p.add_argument("--cudnn-benchmark", action="store_true", help="trainer.benchmark=true on both sides")
    p.add_argument("--on-device", default="auto", help="data.on_device: auto | true | false")
    p.add_argument("--progress-bar", action="store_true", help="alexlab with its rich progress bar (rendered to /dev/null)")
    p.add_argument("--data-share", action="store_true", help="also measure the data pipeline's share of a step (P3)")
    p.add_argument("--mfu", action="store_true", help="also print model FLOP utilisation (P7)")
    p.add_argument("--peak-tflops", type=float, default=0.0, help="device peak for --mfu (default: known GPUs, bf16 dense)")
    p.add_argument("--sides", default="both", choices=["both", "alexlab"],
                   help="alexlab: time only alexlab's path (option speed-ups; no ratio line)")
    p.add_argument("--clock", default="wall", choices=["wall", "cpu", "train"],
                   help="what the last lines' ratios compare: wall = whole epochs (training, evaluation, "
                        "checkpoint); cpu = process CPU time of the same (use --threads 1 on a shared CPU); "
                        "train = training phases only (for short epochs of big nets)")
    p.add_argument("--profile", action="store_true", help="cProfile the last alexlab round (to stderr)")
    p.add_argument("--override", action="append", default=[], help="extra alexlab config override (repeatable)")
    args = p.parse_args(argv)
    if args.fast:
        args.precision, args.channels_last = "auto", "auto"
    args.data = args.data or ("synthetic" if args.image_size > 64 else "fashion_mnist")
    return args


CLOCKS = ("wall", "cpu", "train")


def rates_of(marks: list[dict], images_per_epoch: int) -> dict:
    """Images/s of one round's timed epochs on each clock, and each epoch's fixed cost (evaluation
    and bookkeeping after its last training step)."""
    images = images_per_epoch * len(marks)
    return {"wall": images / (marks[-1]["end"][0] - marks[0]["start"][0]),
            "cpu": images / (marks[-1]["end"][1] - marks[0]["start"][1]),
            "train": images / sum(m["train_end"][0] - m["start"][0] for m in marks),
            "fixed": [m["end"][0] - m["train_end"][0] for m in marks]}


def compare(rates: dict, a: str, b: str) -> dict:
    """Per-clock summary of a's and b's rates and of the per-round ratios a / b."""
    out = {}
    for c in CLOCKS:
        pair = [x / y for x, y in zip(rates[a][c], rates[b][c])]
        out[c] = (summary(rates[a][c]), summary(rates[b][c]), summary(pair), pair)
    return out


def print_comparison(rates: dict, a: str, b: str, what: str) -> dict:
    result = compare(rates, a, b)
    for c, (x, y, q, pair) in result.items():
        print(f"{c:4s} clock: {a} {x['median']:8.1f} img/s, {b} {y['median']:8.1f} img/s (medians of {x['n']}; "
              f"spread {x['spread']:.0%} / {y['spread']:.0%}); {what} median {q['median']:.3f}, "
              f"per round {' '.join(f'{v:.3f}' for v in pair)}")
    return result


def main(argv=None) -> float:
    args = parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.progress_bar:
        os.environ.setdefault("FORCE_COLOR", "1")  # rich renders as on a terminal, into /dev/null
    device = pick_device(args.device)
    args.device = device.type

    from alexlab.train import build, quiet_lightning

    quiet_lightning()
    with tempfile.TemporaryDirectory(prefix="alexlab-bench-") as tmp:
        work = Path(tmp)
        cfg = compose(overrides_from(args, work))
        if cfg.trainer.max_epochs - args.skip_epochs < 1:
            raise SystemExit("--skip-epochs must be smaller than the epochs of a round")
        images_per_epoch = build(cfg)[0].num_train
        # (name, side, config): alexlab in the asked mode, the hand loop in the same, alexlab's baseline
        variants = [("alexlab", "alexlab", cfg)]
        if args.sides == "both":
            variants.append(("hand", "hand", cfg))
        if args.baseline is not None:
            variants.append(("baseline", "alexlab", compose(overrides_from(args, work) + (args.baseline or FP32_NCHW))))
        print(header(device, f"throughput {args.experiment or 'custom'}: {cfg.model.name} w{cfg.model.width} "
                             f"{cfg.data.image_size or 'native'}px {cfg.data.name} b{cfg.data.batch_size}, "
                             f"{images_per_epoch} images x {cfg.trainer.max_epochs} epochs a round"
                             f"{' compile' if args.compile else ''}{' cudnn.benchmark' if args.cudnn_benchmark else ''}"
                             f"{' progress_bar' if args.progress_bar else ''}"))
        for name, _, variant_cfg in variants:
            print(f"{name}: {run_mode(variant_cfg).line().removeprefix('alexlab: ')}")
        rates = {name: {c: [] for c in (*CLOCKS, "fixed")} for name, _, _ in variants}
        for r in range(args.rounds + 1):
            for name, side, variant_cfg in (variants if r % 2 == 0 else variants[::-1]):
                if side == "alexlab":
                    variant_cfg.paths.run_dir = str(work / f"{name}{r}")
                    marks = alexlab_round(variant_cfg, device, profile=args.profile and r == args.rounds)
                else:
                    marks = hand_round(variant_cfg, device)
                if len(marks) != cfg.trainer.max_epochs or any(len(m) != 3 for m in marks):
                    raise SystemExit(f"{name}: {len(marks)} epochs timed, expected {cfg.trainer.max_epochs}")
                if r > 0:  # round 0 warms up
                    for key, value in rates_of(marks[args.skip_epochs:], images_per_epoch).items():
                        rates[name][key] += value if key == "fixed" else [value]
            if r > 0:
                print(f"round {r}: " + "   ".join(
                    f"{c}: " + " ".join(f"{name} {rates[name][c][-1]:7.1f}" for name, _, _ in variants) + " img/s"
                    for c in CLOCKS))
        for name, _, _ in variants:
            print(f"{name}: per-epoch evaluation + bookkeeping {summary(rates[name]['fixed'])['median'] * 1e3:.0f} ms "
                  f"(median), training phase {summary(rates[name]['train'])['median']:.1f} img/s")
        a = summary(rates["alexlab"][args.clock])
        report_extras(args, cfg, device, a)
        if args.sides == "alexlab":
            print(f"alexlab {a['median']:.1f} img/s ({args.clock} clock, median of {a['n']}; spread {a['spread']:.0%})")
            print(f"images_per_s={a['median']:.1f}")
        figures = {"images_per_s": a["median"]}  # the last lines (key=value), on the --clock comparison
        if args.baseline is not None:
            figures["speedup"] = print_comparison(rates, "alexlab", "baseline", "speedup")[args.clock][2]["median"]
        if args.sides == "both":
            figures["ratio"] = print_comparison(rates, "alexlab", "hand", "ratio")[args.clock][2]["median"]
        for key in ("speedup", "ratio"):
            if key in figures:
                print(f"{key}={figures[key]:.3f}")
        return list(figures.values())[-1]


if __name__ == "__main__":
    main()
