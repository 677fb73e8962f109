"""Every GPU figure of issue 8 in one go (about 9 minutes on one H100), written under $OUT.

    OUT=/tmp/gpu python benchmarks/gpu_checks.py                 # on the GPU machine, repository root
    python benchmarks/gpu_checks.py --smoke --out /tmp/smoke       # same steps, tiny, on the CPU (tests this script)
    python benchmarks/gpu_checks.py --list                         # the steps and their time estimates

Steps run in order of importance; one that would overrun --budget seconds is skipped (and says
so). Each step's full output goes to $OUT/<step>.txt, the figures for docs/PERFORMANCE.md to
$OUT/SUMMARY.md. alexlab need not be installed: src/ is put on PYTHONPATH.
  p1_small     alexlab vs hand loop, alexnet_small 32 px, fp32 (P1), data pipeline share (P3)
  divergence   a NaN run on the GPU ends `diverged` (DivergenceGuard's non-blocking check)
  p7_227       the 227-px net, bf16 + channels_last + cudnn.benchmark: images/s, MFU, ratio (P7, P1)
  p6_lrn       LRN forward+backward per call and its share of a step, bf16, eager (P6)
  p5_pool      gpu_pool sweep, trials_per_gpu k = 1, 2, 4, 8: trials/hour, images/s, projection (P5)
  p4_speed     the 227-px net with fp32 / bf16 / bf16+channels_last (alexlab path only) (P4)
  p4_accuracy  short runs, 2 seeds, fp32 vs bf16 vs bf16+channels_last vs +compile: test/acc (P4)
  p7_compile   p7_227 with model.compile=true (P4, P7)
  p6_compiled  p6_lrn with torch.compile (P6)
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FMNIST = Path("/usr/share/datasets/fashion-mnist")


def steps(smoke: bool, out: Path) -> list[tuple[str, int, list[list[str]]]]:
    """(name, estimated seconds, commands) in order of importance; {py} is this Python."""
    dev = "cpu" if smoke else "cuda"
    tp = ["{py}", "benchmarks/throughput.py", "--device", dev]
    small_data = "fashion_mnist" if FMNIST.is_dir() else "synthetic"
    if smoke:
        small = ["--train-images", "256", "--eval-images", "64", "--epochs", "2", "--skip-epochs", "1", "--rounds", "1"]
        big = ["--batch-size", "8", "--train-images", "16", "--eval-images", "8", "--epochs", "2", "--skip-epochs", "1",
               "--rounds", "1", "--width", "0.25"]
        lrn = ["--batch-small", "8", "--batch-227", "2", "--rounds", "2"]
        pool = dict(ks=(1, 2), trials="ablation=paper,no_dropout seed=0", size=["data.num_train=128", "data.num_test=64",
                                                                              "model.width=0.125", "trainer.max_epochs=1"])
        acc = ["data.train_subset=256", "trainer.max_epochs=1", "eval.every_n_epochs=1", "seed=0"]
    else:
        small = ["--train-images", "25600", "--eval-images", "2048", "--epochs", "3", "--skip-epochs", "1", "--rounds", "2"]
        big = ["--batch-size", "128", "--train-images", "4096", "--eval-images", "512", "--epochs", "3", "--skip-epochs", "1",
               "--rounds", "2", "--clock", "train"]
        lrn = ["--batch-small", "128", "--batch-227", "128", "--rounds", "20"]
        pool = dict(ks=(1, 2, 4, 8), trials="ablation=paper,no_lrn,no_dropout,no_augment seed=0,1",
                    size=["data.num_train=10000", "data.num_test=1000", "trainer.max_epochs=2"])
        acc = ["trainer.max_epochs=10", "seed=0,1"]  # the preset evaluates every 5 epochs
    big_net = ["--model", "alexnet", "--image-size", "227"] + big
    fast = ["--precision", "bf16-mixed", "--channels-last"] + ([] if smoke else ["--cudnn-benchmark"])
    train = ["{py} -m alexlab.cli", f"paths.runs={out}/runs", f"paths.multirun={out}/multirun", f"paths.data={out}/data",
             "trainer.progress_bar=false"]
    if smoke:
        train.append("trainer.accelerator=cpu")
    multi = [train[0], "-m", *train[1:]]  # Hydra wants -m before the overrides
    pool_cmds = [[*multi, "experiment=cifar10", "data=synthetic", *pool["size"], *pool["trials"].split(),
                  "launcher=gpu_pool", f"launcher.trials_per_gpu={k}", f"sweep_name=p5_k{k}"] for k in pool["ks"]]
    # the CPU demo preset (2,000 images, batch 32): few overrides, so trial folder names stay short
    acc_base = [*multi, "experiment=fmnist_quick", *([] if small_data == "fashion_mnist" else ["data=synthetic", "data.num_train=2000"]),
                *acc, "sweep_name=p4_accuracy"]
    plan = [
        ("p1_small", 60, [tp + ["--data", small_data, "--data-share"] + small]),
        ("divergence", 15, [[*train, "data=synthetic", "data.num_train=256", "optim.lr=100", "trainer.max_epochs=2",
                             "model.init=default", "name=divergence"]]),
        ("p7_227", 80, [tp + big_net + fast + ["--mfu"]]),
        ("p6_lrn", 30, [["{py}", "benchmarks/lrn.py", "--device", dev, "--dtype", "bf16"] + lrn]),
        ("p5_pool", 190, pool_cmds),
        ("p4_speed", 70, [tp + big_net + ["--sides", "alexlab"] + extra for extra in
                          (["--precision", "32-true"], ["--precision", "bf16-mixed"],
                           ["--precision", "bf16-mixed", "--channels-last"])]),
        ("p4_accuracy", 90, [acc_base + ["trainer.precision=32-true,bf16-mixed", "model.channels_last=false,true"],
                             acc_base + ["trainer.precision=bf16-mixed", "model.channels_last=true", "model.compile=true"]]),
        ("p7_compile", 90, [tp + big_net + fast + ["--mfu", "--compile"]]),
        ("p6_compiled", 60, [["{py}", "benchmarks/lrn.py", "--device", dev, "--dtype", "bf16", "--compile"] + lrn]),
    ]
    if smoke:  # torch.compile takes minutes on a small CPU: the smoke test leaves it out
        plan = [(n, e, [c for c in cmds if not any("compile" in a for a in c)]) for n, e, cmds in plan]
        plan = [step for step in plan if step[2]]
    return plan


def last_value(text: str, key: str) -> str | None:
    found = re.findall(rf"{re.escape(key)}=([-+0-9.eE]+)", text)
    return found[-1] if found else None


def summaries(folder: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(folder.rglob("summary.json"))]


def pool_figures(out: Path, k: int, wall: float) -> str:
    """Measured trials/hour and training images/s of the short trials, and a projection for the
    real sweep: per trial, a fixed cost (process start, data, CUDA) plus 30 epochs, each as long
    as a measured epoch scaled from the trial's images to CIFAR-10's 50,000; k trials at a time."""
    runs = [s for s in summaries(out / "multirun" / f"p5_k{k}") if s.get("status") == "completed"]
    if not runs or not wall:
        return f"k={k}: no completed trials"
    images = sum(s.get("num_train", 0) * s.get("epochs", 0) for s in runs)
    epoch = sum(s["final"]["epoch_time_s"] for s in runs) / len(runs)  # last epoch: after warm-up
    epochs = sum(s.get("epochs", 0) for s in runs) / len(runs)
    fixed = max(0.0, wall * min(k, len(runs)) / len(runs) - epochs * epoch)
    per_trial = fixed + 30 * epoch * 50_000 / runs[0]["num_train"]
    projection = math.ceil(18 / k) * per_trial / 60
    return (f"k={k}: {len(runs)} trials in {wall:.0f} s -> {len(runs) / wall * 3600:.0f} trials/hour, "
            f"{images / wall:.0f} training images/s in all; epoch {epoch:.2f} s, fixed {fixed:.1f} s a trial; "
            f"projected CIFAR-10 one_at_a_time (6 x 3 x 30 epochs): {projection:.1f} min")


def accuracy_figures(out: Path) -> list[str]:
    rows: dict[str, list[float]] = {}
    for s in summaries(out / "multirun" / "p4_accuracy"):
        job = s.get("job", "")
        key = ",".join(sorted(p for p in job.split(",") if p.startswith(("trainer.precision", "model.channels_last",
                                                                              "model.compile"))))
        if s.get("status") == "completed" and (s.get("final") or {}).get("test/acc") is not None:
            rows.setdefault(key or "default", []).append(s["final"]["test/acc"])
    return [f"{k}: test/acc {' '.join(f'{v:.4f}' for v in accs)} (mean {sum(accs) / len(accs):.4f})"
            for k, accs in sorted(rows.items())]


def figures(name: str, text: str, out: Path, walls: list[float], pool_ks) -> list[str]:
    """The lines of SUMMARY.md for one step."""
    keep = [line for line in text.splitlines() if line.startswith(("#", "wall clock", "train clock", "alexlab:", "hand:",
                                                                   "data pipeline", "model:", "small ", "227 ", "alexnet",
                                                                   "check:", "alexlab ", "images_per_s", "ratio=", "lrn_share"))]
    if name == "p5_pool":
        keep = [pool_figures(out, k, w) for k, w in zip(pool_ks, walls)]
    elif name == "p4_accuracy":
        keep = accuracy_figures(out)
    elif name == "divergence":
        states = [s.get("status") for s in summaries(out / "runs" / "divergence")]
        keep = [f"status {states} (expected ['diverged'])"] + [line for line in text.splitlines() if "loss is" in line][:1]
    return keep


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.environ.get("OUT") or "/tmp/alexlab-gpu-checks")
    p.add_argument("--budget", type=float, default=540.0, help="seconds for all steps together")
    p.add_argument("--smoke", action="store_true", help="tiny versions on the CPU, to test this script")
    p.add_argument("--only", default="", help="comma-separated step names")
    p.add_argument("--list", action="store_true")
    args = p.parse_args(argv)
    out = Path(args.out).resolve()
    plan = steps(args.smoke, out)
    if args.only:
        wanted = args.only.split(",")
        unknown = set(wanted) - {n for n, _, _ in plan}
        if unknown:
            raise SystemExit(f"--only: unknown step(s) {', '.join(sorted(unknown))}; choose from "
                             f"{', '.join(n for n, _, _ in plan)}")
        plan = [s for s in plan if s[0] in wanted]
    if args.list:
        for name, est, cmds in plan:
            print(f"{name:12s} ~{est:4d} s  " + " ;; ".join(" ".join(c) for c in cmds))
        return 0
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO / "benchmarks"),
                                                        os.environ.get("PYTHONPATH", "")]),
           "PYTHONUNBUFFERED": "1"}
    if args.smoke:
        env["OMP_NUM_THREADS"] = "1"
    start = time.time()
    lines = [f"# GPU checks ({'smoke, CPU' if args.smoke else 'GPU'}) {time.strftime('%Y-%m-%d %H:%M')}", ""]
    env_text = subprocess.run([sys.executable, "-c", "import torch, pytorch_lightning as pl; print('torch', torch.__version__, "
                               "'lightning', pl.__version__, 'cuda', torch.cuda.is_available() and "
                               "torch.cuda.get_device_name(0))"], capture_output=True, text=True, env=env, cwd=REPO)
    smi = subprocess.run("nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader",
                         shell=True, capture_output=True, text=True)
    lines += [f"- {env_text.stdout.strip() or env_text.stderr.strip()[-300:]}", f"- {smi.stdout.strip() or 'no nvidia-smi'}", ""]
    failures = 0
    for name, estimate, cmds in plan:
        left = args.budget - (time.time() - start)
        if estimate > left and not args.smoke:
            lines += [f"## {name}: skipped ({left:.0f} s of the budget left, ~{estimate} s needed)", ""]
            continue
        text, walls = "", []
        for cmd in cmds:
            cmd = [c.replace("{py}", shlex.quote(sys.executable)) for c in cmd]
            shell = " ".join(cmd)
            t0 = time.time()
            try:
                proc = subprocess.run(shell, shell=True, capture_output=True, text=True, env=env, cwd=REPO,
                                      timeout=max(30.0, args.budget - (time.time() - start) + 30))
                rc, output = proc.returncode, proc.stdout + proc.stderr
            except subprocess.TimeoutExpired as err:
                rc, output = 124, f"{err.stdout or ''}{err.stderr or ''}\n(timed out)"
                output = output if isinstance(output, str) else output.decode(errors="replace")
            walls.append(time.time() - t0)
            text += f"$ {shell}\n(exit {rc}, {walls[-1]:.0f} s)\n{output}\n"
            if rc not in (0, 2 if name == "divergence" else 0):
                failures += 1
        (out / f"{name}.txt").write_text(text)
        lines += [f"## {name} ({sum(walls):.0f} s)"] + [f"    {f}" for f in figures(name, text, out, walls, pool_ks(args.smoke))] + [""]
        (out / "SUMMARY.md").write_text("\n".join(lines) + "\n")
    lines.append(f"total {time.time() - start:.0f} s; {failures} command(s) failed (see <step>.txt)")
    (out / "SUMMARY.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 1 if failures else 0


def pool_ks(smoke: bool):
    return (1, 2) if smoke else (1, 2, 4, 8)


if __name__ == "__main__":
    sys.exit(main())
