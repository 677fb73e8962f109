"""The full CPU sweep: the paper's one-at-a-time sweep (every arm but one_column, one seed, tiny) in which one arm
fails and one diverges; the others complete, the sweep goes on past both and lists them; the
same command again finishes only the failed arm and touches nothing that had finished."""
import json

from alexlab.config import job_name
from conftest import TINY, compose_cfg
from faults import StepFault, cli, poison, raise_, tiny, trial_name

SWEEP = [*TINY, "sweep=one_at_a_time", "seed=0"]  # sweeps/one_at_a_time.yaml itself, one seed
# the sweep file's order: glob(*) lists conf/ablation/ by name
ARMS = ("no_augment", "no_dropout", "no_lrn", "no_overlap", "no_pca", "paper", "tanh")


def arm(module=None) -> str:
    return next(p.split("=")[1] for p in trial_name().split(",") if p.startswith("ablation="))


def outcomes(sweep_dir) -> dict:
    report = json.loads((sweep_dir / "sweep_summary.json").read_text())
    return {next(p.split("=")[1] for p in r["trial"].split(",") if p.startswith("ablation=")): r
            for r in report["trials"]}


def finished_files(sweep_dir) -> dict:
    return {p: p.stat().st_mtime_ns for name in ("COMPLETED", "summary.json", "metrics.csv", "last.ckpt")
            for p in sweep_dir.rglob(name)}


def test_one_at_a_time_sweep_with_a_failing_and_a_diverging_arm_then_a_rerun_finishes_nothing_twice(tmp_path,
                                                                                                   monkeypatch):
    with monkeypatch.context() as mp:
        StepFault(4, poison(float("nan")), when=lambda m: arm() == "tanh").install(mp)  # epoch 1, batch 1
        StepFault(1, raise_(RuntimeError("injected fault")), when=lambda m: arm() == "no_lrn").install(mp)
        code, out, err = cli(SWEEP, tmp_path, multirun=True)
    assert code == 2
    sweep_dir = tmp_path / "multirun" / "one_at_a_time" / "default"
    rows = outcomes(sweep_dir)
    assert list(rows) == list(ARMS)  # in the sweep file's order: the arms after the bad ones still ran
    assert {a: r["outcome"] for a, r in rows.items()} == {
        "paper": "completed", "tanh": "diverged", "no_lrn": "failed", "no_overlap": "completed",
        "no_dropout": "completed", "no_augment": "completed", "no_pca": "completed"}
    assert rows["tanh"]["error"].startswith("loss is nan at epoch 1, step 4 (batch 1)")
    assert rows["no_lrn"]["error"] == "RuntimeError: injected fault"
    assert all(rows[a]["epochs"] == 2 and rows[a]["test/acc"] is not None for a in ARMS if a not in ("tanh", "no_lrn"))
    assert "5 completed, 1 diverged, 1 failed" in out
    assert err.strip().splitlines()[-1] == ("alexlab: error: sweep one_at_a_time: 1 of 7 trials failed or did not "
                                            "finish; rerun the same command to retry them (see sweep_summary.md)")
    md = (sweep_dir / "sweep_summary.md").read_text()
    assert "| diverged | " in md and "| failed | " in md and "RuntimeError: injected fault" in md
    before = {p: m for p, m in finished_files(sweep_dir).items() if "ablation=no_lrn" not in str(p)}

    with monkeypatch.context() as mp:  # the fault is gone; the same command
        steps = StepFault(-1, None, key=arm).install(mp)
        code, out, err = cli(SWEEP, tmp_path, multirun=True)
    assert code == 0, err[-3000:]
    assert {a: r["outcome"] for a, r in outcomes(sweep_dir).items()} == {
        "paper": "skipped", "tanh": "diverged", "no_lrn": "completed", "no_overlap": "skipped",
        "no_dropout": "skipped", "no_augment": "skipped", "no_pca": "skipped"}
    assert steps.calls == {"no_lrn": 6}  # only the failed arm trained (2 epochs x 3 steps), from scratch
    assert {p: m for p, m in finished_files(sweep_dir).items() if p in before} == before  # nothing finished twice


def test_a_trial_whose_folder_cannot_be_made_fails_alone_and_the_others_run(tmp_path):
    """Anything that stops one trial before its run starts (here a file where its folder should
    be: Hydra cannot make the folder) is that trial's failure, never the sweep's."""
    sweep_dir = tmp_path / "multirun" / "adhoc" / "default"
    blocked = sweep_dir / job_name(compose_cfg(tiny("seed=1"), return_hydra=True).hydra.job.override_dirname)
    blocked.parent.mkdir(parents=True)
    blocked.write_text("a file where seed 1's folder goes\n")

    code, out, err = cli(tiny("seed=0,1,2"), tmp_path, multirun=True)
    assert code == 2
    ledger = json.loads((sweep_dir / "sweep_ledger.json").read_text())["trials"]
    states = {k.split("seed=")[1].split(",")[0]: t for k, t in ledger.items()}
    assert {s: t["state"] for s, t in states.items()} == {"0": "completed", "1": "failed", "2": "completed"}
    assert states["1"]["error"].startswith(f"cannot write {blocked} (")
    report = json.loads((sweep_dir / "sweep_summary.json").read_text())
    assert sorted(r["outcome"] for r in report["trials"]) == ["completed", "completed", "failed"]
    assert f"alexlab: error: {blocked.name}: cannot write {blocked} (" in err
    assert err.strip().splitlines()[-1].startswith("alexlab: error: sweep adhoc: 1 of 3 trials failed")


def test_a_sweep_with_an_over_long_override_runs_every_trial_in_a_folder_name_that_fits(tmp_path):
    """A value that would make a folder name over 255 bytes: the name is shortened with a stable
    hash (config.job_name), every trial runs, and the same command finds the same folders."""
    sweep = tiny("ablation_name=short," + "a_label_that_goes_on" * 15)  # 300 characters
    code, _, err = cli(sweep, tmp_path, multirun=True)
    assert code == 0, err[-3000:]
    sweep_dir = tmp_path / "multirun" / "adhoc" / "default"
    folders = sorted(p.parent for p in sweep_dir.rglob("COMPLETED"))
    assert len(folders) == 2 and all(len(p.name.encode()) <= 255 for p in folders)
    assert any(len(p.name.encode()) > 200 and "~" in p.name for p in folders)  # the long one, shortened

    code, out, err = cli(sweep, tmp_path, multirun=True)  # the same command: both found, both skipped
    assert code == 0, err[-3000:]
    assert out.count("completed earlier; skipped") == 2
    assert sorted(p.parent for p in sweep_dir.rglob("COMPLETED")) == folders
