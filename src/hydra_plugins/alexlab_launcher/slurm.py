"""`launcher=slurm`: Hydra's submitit launcher, plus the sweep ledger. Every trial is registered
as waiting before submission; a SLURM job that dies outright (node failure, time limit after its
requeues) leaves its trial "running" in the ledger instead of aborting the sweep's summary.
Preemption and time limits requeue the job (submitit's checkpoint()); the trial's fixed folder and
checkpoints/last.ckpt make the requeued job resume where it stopped.
"""

import logging
import shutil
from dataclasses import dataclass
from typing import Sequence

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn
from hydra_plugins.hydra_submitit_launcher.config import LocalQueueConf, SlurmQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import LocalLauncher, SlurmLauncher

from alexlab.errors import AlexlabError

from .launcher import prepare_trials, returned

log = logging.getLogger(__name__)


class _Ledgered:
    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from pathlib import Path

        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        trials = prepare_trials(self.hydra_context, self.config, job_overrides, initial_job_idx)
        try:
            return super().launch(job_overrides, initial_job_idx)
        except Exception as err:  # submitit: a job that died without a result
            log.error(f"a submitit job ended without a result ({type(err).__name__}: {str(err).splitlines()[0]}); "
                      "the sweep summary lists its trial as unfinished; rerun the command to resume it")
            return [returned(t, {"status": "unfinished"}) for t in trials]


class AlexlabSlurmLauncher(_Ledgered, SlurmLauncher):
    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        if shutil.which("sbatch") is None:
            raise AlexlabError("launcher=slurm needs SLURM's sbatch on PATH (run on the cluster's login node); "
                               "on this machine use launcher=local or launcher=gpu_pool")
        return super().launch(job_overrides, initial_job_idx)


class AlexlabSubmititLocalLauncher(_Ledgered, LocalLauncher):
    """Submitit's local executor (trials in subprocesses): the SLURM code path without SLURM."""


@dataclass
class AlexlabSlurmConf(SlurmQueueConf):
    _target_: str = "hydra_plugins.alexlab_launcher.slurm.AlexlabSlurmLauncher"


@dataclass
class AlexlabSubmititLocalConf(LocalQueueConf):
    _target_: str = "hydra_plugins.alexlab_launcher.slurm.AlexlabSubmititLocalLauncher"


ConfigStore.instance().store(group="hydra/launcher", name="alexlab_slurm", node=AlexlabSlurmConf, provider="alexlab")
ConfigStore.instance().store(group="hydra/launcher", name="alexlab_submitit_local", node=AlexlabSubmititLocalConf,
                             provider="alexlab")
