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
