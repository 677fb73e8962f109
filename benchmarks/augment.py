"""What the paper's augmentation costs beside the training step it feeds.

Claim (docs/AUGMENTATION.md): run on whole batches on the training device, crop + flip + PCA
lighting (BatchTransform.train_batch: uint8 in, standardised crops out) is a small fraction of
one training step (forward + backward + SGD step) of the net it feeds.
    .venv/bin/python benchmarks/augment.py                 # CPU: ~30-60 s on 2 cores
    .venv/bin/python benchmarks/augment.py --device cuda   # GPU: batch 128 for both nets
Warm-up calls first; CUDA timings use events around the timed calls only.
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from alexlab.config import ModelConfig
from alexlab.data import BatchTransform, pixel_statistics
from alexlab.models import build_model
from alexlab.config import conf_dir

# (model preset, stored image px, zero padding px, input px, classes)
CASES = {"alexnet_small": (32, 4, 32, 10), "alexnet": (256, 0, 227, 1000)}


def timed(fn, reps: int, device: torch.device) -> float:
    """Mean seconds per call of fn over reps calls, after one warm-up call."""
    fn()
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        for _ in range(reps):
            fn()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / 1000 / reps
    begin = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - begin) / reps


def bench(name: str, batch: int, steps: int, aug_reps: int, augment: str, device: torch.device) -> dict:
    stored, padding, size, classes = CASES[name]
    cfg = OmegaConf.merge(OmegaConf.structured(ModelConfig), OmegaConf.load(f"{conf_dir()}/model/{name}.yaml"))
    net = build_model(cfg, classes, 3, size).to(device).train()
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)  # the paper's SGD
    x = torch.randint(0, 256, (batch, 3, stored, stored), dtype=torch.uint8, device=device)
    y = torch.randint(0, classes, (batch,), device=device)
    s = pixel_statistics(x.cpu())
    transform = BatchTransform(s["mean"], s["std"], size, padding, augment, s["eigval"], s["eigvec"]).to(device)
    inputs = transform.train_batch(x)

    def step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(inputs), y).backward()
        opt.step()

    aug_s = timed(lambda: transform.train_batch(x), aug_reps, device)
    step_s = timed(step, steps, device)
    return {"model": name, "px": size, "batch": batch, "aug_ms": aug_s * 1e3, "step_ms": step_s * 1e3,
            "ratio": aug_s / step_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--augment", default="crop_flip_pca", choices=("crop_flip", "crop_flip_pca"))
    parser.add_argument("--small-batch", type=int, default=128, help="alexnet_small batch (paper 128)")
    parser.add_argument("--large-batch", type=int, default=0, help="alexnet batch; 0 = 128 on CUDA, 16 on CPU")
    parser.add_argument("--steps", type=int, default=0, help="timed training steps; 0 = 20 on CUDA, 2 on CPU")
    parser.add_argument("--aug-reps", type=int, default=20, help="timed augmentation calls")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads; 0 = torch's default")
    args = parser.parse_args()
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    gpu = device.type == "cuda"
    steps = args.steps or (20 if gpu else 2)
    large = args.large_batch or (128 if gpu else 16)
    where = torch.cuda.get_device_name(device) if gpu else f"CPU, {torch.get_num_threads()} threads"
    print(f"augmentation ({args.augment}) vs training step (forward+backward+SGD) on {where}, torch {torch.__version__}")
    print(f"{'model':<14}{'px':>5}{'batch':>7}{'augment ms':>12}{'step ms':>11}{'augment/step':>14}")
    for name, batch in (("alexnet_small", args.small_batch), ("alexnet", large)):
        r = bench(name, batch, steps, args.aug_reps, args.augment, device)
        print(f"{r['model']:<14}{r['px']:>5}{r['batch']:>7}{r['aug_ms']:>12.2f}{r['step_ms']:>11.1f}{r['ratio']:>13.1%}")


if __name__ == "__main__":
    main()
