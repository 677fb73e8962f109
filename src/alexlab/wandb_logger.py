"""Weights & Biases: one W&B run per run folder, resumed with it, never a reason for training to stop.

`logger=wandb` adds this logger beside metrics.csv. The W&B run starts lazily at fit start and
is finished by train.run()'s `finally` (alexlab_finish). Any W&B error (network, auth, quota,
a missing package) prints one warning and training goes on with CSV only. `wandb` is imported
only in here, so a machine without it trains as long as `logger=wandb` is not asked for.
"""
from __future__ import annotations

import json
import netrc
import os
import secrets
import shlex
import string
import sys
from pathlib import Path
from urllib.parse import urlsplit

from omegaconf import OmegaConf
from pytorch_lightning.loggers.logger import Logger
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from .config import inapplicable
from .run_folder import FACTS, atomic_write_text
from .sweep import in_multirun

ID_FILE = "wandb_id"  # the W&B run id of this run folder: a resumed or requeued run continues it
# metrics.csv's curves (docs/ARCHITECTURE.md, "One run's folder"); each plotted against `epoch`
CURVES = ("train/*", "train_clean/*", "test/*", "gap", "lr", "epoch_time_s", "images_per_s")
# end-of-run values that go into the W&B run summary beside the final row
FINAL = ("status", "error", "epochs", "best_test_acc", "best_epoch", "epochs_to_train_error", "wall_time_s")
ONLINE_FAILED = False  # set when W&B could not be reached: later runs of this process go offline at once


def warn(message: str) -> None:
    print(f"alexlab: warning: {message}", file=sys.stderr, flush=True)


def has_credentials() -> bool:
    """Logged in (netrc entry for the W&B host) or a key/token in the environment; the key itself is left
    to wandb, never copied into alexlab's config or files."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = urlsplit(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    candidates = [os.environ["NETRC"]] if os.environ.get("NETRC") else ["~/.netrc", "~/_netrc"]
    for path in candidates:
        path = Path(path).expanduser()
        try:
            if path.is_file() and netrc.netrc(str(path)).authenticators(host):
                return True
        except (OSError, netrc.NetrcParseError):
            pass
    return False


def resolve_mode(mode: str) -> str:
    """auto: WANDB_MODE if the user set it, else online with credentials, else offline."""
    if mode != "auto":
        return mode
    env = os.environ.get("WANDB_MODE", "").lower()
    if env in ("online", "offline", "disabled"):
        return env
    if env in ("dryrun", "run"):
        return "offline" if env == "dryrun" else "online"
    return "online" if has_credentials() else "offline"


def toggle_tags(cfg) -> list[str]:
    """The README's toggles as filterable tags (activation:tanh, norm:none, ...), then the user's own."""
    m, d = cfg.model, cfg.data
    tags = [f"activation:{m.activation}", f"pooling:{m.pooling}", f"norm:{m.norm}",
            f"dropout:{float(m.dropout):g}", f"augment:{d.augment}", f"seed:{cfg.seed}"]
    return tags + [str(t) for t in (cfg.logger.wandb.tags or []) if str(t) not in tags]


def new_run_id() -> str:
    alphabet = string.ascii_lowercase + string.digits  # W&B's own id alphabet
    return "".join(secrets.choice(alphabet) for _ in range(8))


def plain_config(cfg) -> dict:
    """The resolved config without the keys that do not apply to this data set (a CIFAR-10 run has
    no data.num_train: that is the size of generated synthetic data)."""
    try:
        plain = OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # an interpolation that only resolves inside Hydra: keep it as written
        plain = OmegaConf.to_container(cfg, resolve=False)
    for key in inapplicable(cfg):
        section, _, leaf = key.rpartition(".")
        plain.get(section, {}).pop(leaf, None)
    return plain


def group_name(cfg, multirun: bool) -> str:
    """A sweep's runs are grouped by sweep and experiment (the same sweep on two presets is two
    groups, never averaged together); a single run by its experiment."""
    return f"{cfg.sweep_name}-{cfg.name}" if multirun else str(cfg.name)


class AlexlabWandbLogger(Logger):
    """A Lightning logger over one W&B run; every W&B call is guarded (first failure: warn, stop W&B)."""

    def __init__(self, cfg, run_dir: Path, mode: str):
        super().__init__()
        w = cfg.logger.wandb
        self.run_dir = Path(run_dir)
        self.mode = mode
        self.fresh = bool(cfg.trainer.fresh)
        self.multirun = in_multirun()
        self.log_checkpoints = bool(w.log_checkpoints)
        self.init_kwargs = dict(
            project=w.project, entity=w.entity or None, name=self.run_dir.name,
            group=group_name(cfg, self.multirun), job_type=cfg.ablation_name,
            tags=toggle_tags(cfg), config=plain_config(cfg), dir=str(self.run_dir))
        self.run = None
        self.dead = False  # a W&B call failed: no further W&B calls in this run

    # -- Lightning's Logger interface ------------------------------------------------------------
    @property
    def name(self) -> str:
        return "wandb"

    @property
    def version(self):
        return self.run.id if self.run is not None else None

    @property
    def experiment(self):
        return self.start()

    @rank_zero_only
    def log_hyperparams(self, params, *args, **kwargs) -> None:
        self.start()  # the config is the resolved Hydra config (init), not the module's hparams

    @rank_zero_only
    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        run = self.start()
        if run is None:
            return
        row = {k: v for k, v in metrics.items() if v is not None}
        if step is not None:
            row.setdefault("epoch", step)
        self.guard("log", lambda: run.log(row))

    @rank_zero_only
    def finalize(self, status: str) -> None:
        pass  # the run stays open until alexlab_finish has written the summary

    # -- the W&B run -----------------------------------------------------------------------------
    def guard(self, what: str, call):
        if self.dead:
            return None
        try:
            return call()
        except Exception as err:
            self.dead = True
            warn(f"W&B {what} failed ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); "
                 f"continuing without W&B, metrics.csv has every epoch")
            self.close(exit_code=1)
            return None

    def run_id(self) -> str:
        """The folder's stored id (resume), unless this is a fresh start; a W&B agent's id wins."""
        path = self.run_dir / ID_FILE
        agent_id = None if self.multirun else os.environ.get("WANDB_RUN_ID")
        stored = path.read_text().strip() if path.is_file() and not self.fresh else ""
        run_id = agent_id or stored or new_run_id()
        if run_id != stored:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, run_id + "\n")
        return run_id

    def start(self):
        global ONLINE_FAILED
        if self.run is not None or self.dead or rank_zero_only.rank != 0:
            return self.run
        try:
            import wandb
        except ImportError:
            self.dead = True
            warn("logger=wandb but the wandb package is not installed (pip install wandb); continuing with CSV only")
            return None
        if self.mode == "online" and ONLINE_FAILED:
            self.mode = "offline"  # the next trials of a sweep don't wait out W&B's timeout again
        kwargs = dict(self.init_kwargs, config={**self.init_kwargs["config"], **self.derived()},
                      id=self.run_id(), resume="allow", reinit=reinit_value(wandb.__version__))
        try:
            self.run = wandb.init(mode=self.mode, settings=wandb.Settings(silent=True), **kwargs)
        except Exception as err:
            first = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            if self.mode != "online":
                self.dead = True
                warn(f"W&B could not start ({first}); continuing without W&B, metrics.csv has every epoch")
                return None
            ONLINE_FAILED = True
            warn(f"W&B online start failed ({first}); logging offline instead (wandb sync uploads it later)")
            self.mode = "offline"
            return self.start_offline(wandb, kwargs)
        return self.announce()

    def start_offline(self, wandb, kwargs):
        try:
            wandb.teardown()  # the failed online attempt still holds this run id in W&B's service process
            self.run = wandb.init(mode="offline", settings=wandb.Settings(silent=True), **kwargs)
        except Exception as err:
            self.dead = True
            warn(f"W&B offline start failed too ({type(err).__name__}); continuing without W&B")
            return None
        return self.announce()

    def announce(self):
        run = self.run
        ok = self.guard("define_metric", lambda: [run.define_metric("epoch")]
                        + [run.define_metric(name, step_metric="epoch") for name in CURVES])
        if ok is None:
            return None
        if self.mode == "offline":
            where = run.settings.sync_dir
            print(f"alexlab: W&B run saved offline; upload it with: wandb sync {shlex.quote(str(where))}", flush=True)
        elif self.mode == "online" and getattr(run, "url", None):
            print(f"alexlab: W&B run {run.url}", flush=True)
        return run

    def derived(self) -> dict:
        path = self.run_dir / "summary.json"
        try:
            summary = json.loads(path.read_text()) if path.is_file() else {}
        except (OSError, ValueError):
            summary = {}
        return {k: summary[k] for k in FACTS if k in summary}

    @rank_zero_only
    def alexlab_finish(self, summary: dict) -> None:
        """train.run()'s `finally`: final metrics into the run summary, optional checkpoint, finish."""
        run = self.run
        if run is None:
            return
        final = {k: (int(v) if k == "epoch" else v) for k, v in (summary.get("final") or {}).items() if v is not None}
        values = {**final, **{k: summary.get(k) for k in FINAL if summary.get(k) is not None}}
        self.guard("summary", lambda: run.summary.update(values))
        ckpt = self.run_dir / "checkpoints" / "last.ckpt"
        if self.log_checkpoints and ckpt.is_file():
            self.guard("checkpoint upload", lambda: self.upload(run, ckpt, summary))
        self.close(exit_code=0 if summary.get("status") == "completed" else 1)

    def upload(self, run, ckpt: Path, summary: dict) -> None:
        import wandb

        meta = {k: summary.get(k) for k in ("status", "epochs", "best_test_acc", "best_epoch")}
        artifact = wandb.Artifact(f"model-{run.id}", type="model", metadata=meta)
        artifact.add_file(str(ckpt), name="last.ckpt")
        run.log_artifact(artifact, aliases=["last"])

    def close(self, exit_code: int = 0) -> None:
        run, self.run = self.run, None
        if run is None:
            return
        try:
            run.finish(exit_code=exit_code)
            import wandb
            wandb.teardown()  # W&B's service writes the run's files asynchronously; this waits until they are whole
        except Exception as err:
            warn(f"W&B finish failed ({type(err).__name__}); the offline files in {self.run_dir / 'wandb'} remain")


def reinit_value(version: str):
    """Finish a run this process left open before starting the next trial's (never mix trials)."""
    try:
        parts = tuple(int(p) for p in version.split(".")[:3])
    except ValueError:
        return "finish_previous"
    return "finish_previous" if parts >= (0, 19, 10) else True


def make_wandb_logger(cfg, run_dir: Path):
    """The W&B logger for `logger=wandb`, or None when W&B is disabled or not installed."""
    mode = resolve_mode(cfg.logger.wandb.mode)
    if mode == "disabled":
        return None
    try:
        import wandb  # noqa: F401  (only to fail early and once when it is missing)
    except ImportError:
        warn("logger=wandb but the wandb package is not installed (pip install wandb); continuing with CSV only")
        return None
    return AlexlabWandbLogger(cfg, run_dir, mode)
