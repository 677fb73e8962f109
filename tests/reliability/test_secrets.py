"""A planted WANDB_API_KEY reaches no file of a sweep: run folders, W&B's offline files, Hydra's
saved configs, the ledger and the summary (tests/test_wandb.py checks a single run)."""
import pytest

from faults import cli, tiny

KEY = "feedface" * 5  # 40 hex characters, like a real key


@pytest.fixture
def offline_wandb(monkeypatch, tmp_path):
    for name in ("WANDB_RUN_ID", "WANDB_SWEEP_ID", "WANDB_DIR", "WANDB_PROJECT", "WANDB_ENTITY", "WANDB_RESUME",
                 "WANDB_BASE_URL", "WANDB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    for name, sub in (("WANDB_CONFIG_DIR", "config"), ("WANDB_CACHE_DIR", "cache"), ("WANDB_DATA_DIR", "data"),
                      ("WANDB_ARTIFACT_DIR", "artifacts")):
        monkeypatch.setenv(name, str(tmp_path / "wandb_home" / sub))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_API_KEY", KEY)
    monkeypatch.setenv("NETRC", str(tmp_path / "no_netrc"))
    import wandb

    wandb.teardown()  # W&B reads its variables once per process
    yield
    wandb.teardown()


def test_a_planted_api_key_reaches_no_file_of_a_sweep(offline_wandb, tmp_path):
    code, out, err = cli(tiny("logger=wandb", "logger.wandb.mode=offline", "logger.wandb.log_checkpoints=true",
                              "trainer.max_epochs=1", "seed=0,1"), tmp_path, multirun=True)
    assert code == 0, err[-3000:]
    sweep_dir = tmp_path / "multirun" / "adhoc" / "default"
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert {"sweep_ledger.json", "sweep_summary.json", "multirun.yaml", "config.yaml", "summary.json",
            "wandb_id"} <= names  # the scan covers the files that hold configs and ids
    assert len(list(sweep_dir.glob("*/wandb/offline-run-*/run-*.wandb"))) == 2  # W&B wrote both trials
    assert [p for p in files if KEY.encode() in p.read_bytes()] == []
    assert KEY not in out and KEY not in err  # nor the console (gpu_pool keeps it in console.log)
