"""Callbacks that let a test see inside a run it starts in another process (given on the command
line as +callbacks.<name>._target_=probes.<Class>; start_cli puts this folder on PYTHONPATH)."""
import json
import os
from pathlib import Path

import pytorch_lightning as pl


class ShardRecorder(pl.Callback):
    """Each rank writes the training indices its sampler yields in each epoch to
    $ALEXLAB_FAULT_DIR/shard-<rank>-<epoch>.json (after Lightning set the sampler's epoch). The rank:
    submitit's task rank where there is one (each task of a job that is not one DDP job believes
    itself rank 0), else Lightning's."""

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        rank = os.environ.get("SUBMITIT_LOCAL_GLOBALID") or trainer.global_rank
        indices = [int(i) for i in trainer.train_dataloader.sampler]
        path = Path(os.environ.get("ALEXLAB_FAULT_DIR", ".")) / f"shard-{rank}-{trainer.current_epoch}.json"
        path.write_text(json.dumps(indices))


class SignalAtStep(pl.Callback):
    """Sends `signum` (a name: SIGTERM, SIGINT) to its own process as global step `step` of the run
    with seed `seed` starts, once ($ALEXLAB_FAULT_DIR/signal_sent marks it sent): a fault that
    travels in the config, so it reaches trials that run in processes the test does not start
    itself (gpu_pool's spawned children), and a rerun of the same command runs clean."""

    def __init__(self, step: int, seed: int, signum: str = "SIGTERM"):
        self.step, self.seed, self.signum = step, seed, signum

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        sent = Path(os.environ.get("ALEXLAB_FAULT_DIR", ".")) / "signal_sent"
        if trainer.global_step == self.step and pl_module.seed == self.seed and not sent.exists():
            import signal

            sent.write_text(self.signum)
            os.kill(os.getpid(), getattr(signal, self.signum))


class Rendezvous(pl.Callback):
    """Each run announces itself at the start of training ($ALEXLAB_FAULT_DIR/arrived-<who>) and waits
    (up to `timeout` s) until `runs` runs have: all of them then write met-<who>. <who> is the run's
    seed, or its submitit task (task-<k>) where there is one. Two runs meet only if they run at the
    same time, whatever the machine's load, so a test of "n trials at once" needs no timing: a pool
    that ran them one after another leaves the first to time out without met-<who>. It also holds
    a run until the others have started, as DDP's process group holds the ranks of one job."""

    def __init__(self, runs: int, timeout: float = 120.0):
        self.runs, self.timeout = runs, timeout

    def on_train_start(self, trainer, pl_module) -> None:
        import time

        folder = Path(os.environ.get("ALEXLAB_FAULT_DIR", "."))
        task = os.environ.get("SUBMITIT_LOCAL_GLOBALID")
        who = f"task-{task}" if task is not None else str(pl_module.seed)
        (folder / f"arrived-{who}").write_text(str(os.getpid()))
        deadline = time.monotonic() + self.timeout
        while len(list(folder.glob("arrived-*"))) < self.runs:
            if time.monotonic() > deadline:
                return
            time.sleep(0.05)
        (folder / f"met-{who}").write_text(str(os.getpid()))
