"""P8 extra: trials per hour with more than one trial per machine. The same small sweep (N seeds of
a preset, short runs) through `alexlab-train -m ... launcher=gpu_pool trainer.accelerator=cpu`
with launcher.n_jobs = k trials at once and trainer.threads = cores / k, for each k, interleaved
over rounds; each sweep is timed whole (process start, trial processes, data, training, report
files), as a user waits for it.

    .venv/bin/python benchmarks/sweep_rate.py                          # fmnist_quick, 4 trials x 5 epochs, k = 1, 2
    .venv/bin/python benchmarks/sweep_rate.py --trials 8 --epochs 25 --jobs 1,2 --rounds 2

The trials run in the preset's own mode (fmnist_quick: trainer.precision=auto,
model.channels_last=auto). Last line: `sweep_speedup=<trials/hour with the last k / with the first>`.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, summary  # noqa: E402


def sweep_command(args, k: int, folder: Path) -> list[str]:
    threads = max(1, args.cores // k)
    return [sys.executable, "-m", "alexlab.cli", "-m", f"experiment={args.experiment}",
            f"seed={','.join(str(s) for s in range(args.trials))}", f"trainer.max_epochs={args.epochs}",
            "launcher=gpu_pool", f"launcher.n_jobs={k}", f"trainer.threads={threads}", "trainer.accelerator=cpu",
            "trainer.progress_bar=false", "data.download=false", "sweep_name=rate", f"paths.multirun={folder}",
            f"paths.data={folder.parent / 'data'}", *args.override]


def run_sweep(args, k: int, folder: Path) -> float:
    """Seconds the whole sweep took; every trial must have completed."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    start = time.perf_counter()
    proc = subprocess.run(sweep_command(args, k, folder), cwd=folder.parent, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    done = len(list(folder.rglob("COMPLETED")))
    if proc.returncode or done != args.trials:
        raise SystemExit(f"n_jobs={k}: {done} of {args.trials} trials completed (exit {proc.returncode})\n"
                         + proc.stdout[-1500:] + proc.stderr[-1500:])
    return wall


def main(argv=None) -> float:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--experiment", default="fmnist_quick")
    p.add_argument("--trials", type=int, default=4, help="trials per sweep (seeds 0 .. N-1)")
    p.add_argument("--epochs", type=int, default=5, help="trainer.max_epochs of each trial")
    p.add_argument("--jobs", default="1,2", help="launcher.n_jobs values to compare, comma-separated")
    p.add_argument("--cores", type=int, default=os.cpu_count() or 1, help="CPU threads shared out: cores / k a trial")
    p.add_argument("--rounds", type=int, default=1, help="sweeps of each k (no warm-up round: each sweep starts "
                                                         "fresh processes anyway)")
    p.add_argument("--override", action="append", default=[], help="extra alexlab config override (repeatable)")
    args = p.parse_args(argv)
    ks = [int(k) for k in args.jobs.split(",")]
    print(f"# sweep rate {args.experiment}: {args.trials} trials x {args.epochs} epochs, n_jobs {ks}, "
          f"{args.cores} cores | {time.strftime('%Y-%m-%d %H:%M')}")
    walls = {k: [] for k in ks}
    with tempfile.TemporaryDirectory(prefix="alexlab-rate-") as tmp:
        for r in range(args.rounds):
            for k in (ks if r % 2 == 0 else ks[::-1]):
                walls[k].append(run_sweep(args, k, Path(tmp) / f"k{k}_r{r}"))
                print(f"round {r + 1}: n_jobs={k}, {max(1, args.cores // k)} threads a trial: {walls[k][-1]:.1f} s")
    rates = {}
    for k in ks:
        s = summary(walls[k])
        rates[k] = args.trials / s["median"] * 3600
        print(f"n_jobs={k}: {s['median']:.1f} s a sweep (median of {s['n']}; spread {s['spread']:.0%}) -> "
              f"{rates[k]:.0f} trials/hour")
    speedup = rates[ks[-1]] / rates[ks[0]]
    print(f"sweep_speedup={speedup:.3f}")
    return speedup


if __name__ == "__main__":
    main()
