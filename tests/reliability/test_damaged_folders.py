"""Run and sweep folders damaged from outside (a file deleted, a copy cut short): what can be
rebuilt from what is left is rebuilt, in the open; what cannot is refused in one line naming the
files and the way out; never a traceback, never a silent loss."""
import json

import pytest

from faults import StepFault, cli, finished_markers, metrics, one_error_line, only_run, raise_, tiny
from alexlab.errors import AlexlabError

STEPS_PER_EPOCH = 3  # 96 images / 32 per batch, 2 epochs (TINY)
ARGS = tiny()
DAMAGE = {"deleted": lambda path: path.unlink(), "cut short": lambda path: path.write_text(path.read_text()[:40])}


@pytest.mark.parametrize("how", list(DAMAGE))
def test_a_finished_run_whose_summary_is_gone_has_it_rebuilt_without_training_again(how, tmp_path, monkeypatch):
    code, _, err = cli(ARGS, tmp_path)
    assert code == 0, err
    run_dir = only_run(tmp_path)
    whole = json.loads((run_dir / "summary.json").read_text())
    DAMAGE[how](run_dir / "summary.json")

    with monkeypatch.context() as mp:
        steps = StepFault(-1, None).install(mp)
        code, out, err = cli(ARGS, tmp_path)
    assert code == 0, err[-3000:]
    assert f"alexlab: {run_dir / 'summary.json'} is missing or not whole; rebuilding it" in out
    assert steps.calls == {}  # from metrics.csv and the last checkpoint, not by training again
    rebuilt = json.loads((run_dir / "summary.json").read_text())
    same = ("status", "epochs", "final", "best_test_acc", "best_epoch", "epochs_to_train_error", "num_parameters")
    assert {k: rebuilt[k] for k in same} == {k: whole[k] for k in same} and rebuilt["status"] == "completed"
    assert (run_dir / "COMPLETED").is_file()


def test_a_sweep_with_an_empty_ledger_and_a_trial_without_its_summary_rebuilds_both(tmp_path, monkeypatch):
    sweep = tiny("seed=0,1")
    code, _, err = cli(sweep, tmp_path, multirun=True)
    assert code == 0, err
    sweep_dir = tmp_path / "multirun" / "adhoc" / "default"
    (sweep_dir / "sweep_ledger.json").write_text("")  # a copy cut short
    (damaged,) = [p.parent for p in sweep_dir.rglob("summary.json") if "seed=1" in str(p)]
    (damaged / "summary.json").unlink()

    with monkeypatch.context() as mp:
        steps = StepFault(-1, None).install(mp)
        code, out, err = cli(sweep, tmp_path, multirun=True)
    assert code == 0, err[-3000:]
    assert steps.calls == {}
    warnings = [line for line in err.splitlines() if line.startswith("alexlab: warning:")]
    assert warnings and all(line == f"alexlab: warning: sweep ledger {sweep_dir / 'sweep_ledger.json'} is empty; "
                            "starting a new one (the run folders keep every result)" for line in warnings)
    report = json.loads((sweep_dir / "sweep_summary.json").read_text())
    assert sorted(r["outcome"] for r in report["trials"]) == ["completed", "skipped"]
    assert all(r["test/acc"] is not None for r in report["trials"])  # the rebuilt summary has the results
    ledger = json.loads((sweep_dir / "sweep_ledger.json").read_text())
    assert sorted(t["state"] for t in ledger["trials"].values()) == ["completed", "completed"]


@pytest.mark.parametrize("how", ["deleted", "first row lost"])
def test_metrics_lost_beside_a_checkpoint_are_refused_in_one_line_naming_both(how, tmp_path, monkeypatch):
    with monkeypatch.context() as mp:  # stopped in epoch 1: last.ckpt ends epoch 0, metrics.csv has its row
        StepFault(STEPS_PER_EPOCH + 1, raise_(AlexlabError("injected crash"))).install(mp)
        code, _, err = cli(ARGS, tmp_path)
    assert code == 2
    run_dir = only_run(tmp_path)
    csv_path, ckpt = run_dir / "metrics.csv", run_dir / "checkpoints" / "last.ckpt"
    if how == "deleted":
        csv_path.unlink()
        what = "is missing"
    else:
        lines = csv_path.read_text().splitlines(keepends=True)
        csv_path.write_text(lines[0])  # the header only
        what = "lacks the rows of epoch(s) 0"

    with monkeypatch.context() as mp:
        steps = StepFault(-1, None).install(mp)
        code, _, err = cli(ARGS, tmp_path)
    assert code == 2 and steps.calls == {}
    assert one_error_line(err) == (f"alexlab: error: {csv_path} {what} but {ckpt} ends epoch 0; resuming would lose "
                                   "those rows: rerun with trainer.fresh=true to train this run again from the start")
    assert finished_markers(tmp_path) == [] and ckpt.is_file()

    code, _, err = cli([*ARGS, "trainer.fresh=true"], tmp_path)  # the way out the line names
    assert code == 0, err[-3000:]
    assert [r["epoch"] for r in metrics(run_dir)] == ["0", "1"]
