"""A run folder holds one configuration. When the settings behind a folder change (an edited
experiment file: the folder name only records command-line overrides), rerunning the command
must not pass the old run off as the new one: neither skip it as complete nor resume it."""
import json

from conftest import TINY
from faults import cli, metrics, one_error_line, only_run, tiny


def edit_stored_config(run_dir, old: str, new: str) -> None:
    """As if the run had been trained before an experiment file changed `old` into the current `new`."""
    path = run_dir / "config.yaml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def test_a_finished_run_with_other_settings_is_named_not_skipped(tmp_path):
    code, _, err = cli(TINY, tmp_path)
    assert code == 0, err
    run_dir = only_run(tmp_path)
    edit_stored_config(run_dir, "lr: 0.02", "lr: 0.05")
    rows = metrics(run_dir)

    code, _, err = cli(TINY, tmp_path)
    assert code == 2
    line = one_error_line(err)
    assert str(run_dir) in line and "optim.lr: 0.05 -> 0.02" in line and "trainer.fresh=true" in line
    assert (run_dir / "COMPLETED").is_file() and metrics(run_dir) == rows  # nothing of the old run touched

    code, _, err = cli(tiny("trainer.progress_bar=true"), tmp_path)  # how it is shown: not a change
    assert code == 2 and "optim.lr" in one_error_line(err)  # (still the lr, nothing about the bar)
    assert "progress_bar" not in one_error_line(err)

    code, _, err = cli([*TINY, "trainer.fresh=true"], tmp_path)  # the flag the message names
    assert code == 0, err
    assert "lr: 0.02" in (run_dir / "config.yaml").read_text()
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"

    # more epochs than a finished run had: not extended in place (an unfinished one is: tests/test_wandb.py)
    edit_stored_config(run_dir, "max_epochs: 2", "max_epochs: 1")
    code, _, err = cli(TINY, tmp_path)
    assert code == 2 and "trainer.max_epochs: 1 -> 2" in one_error_line(err)


def test_a_sweep_reruns_only_the_trial_whose_settings_changed_and_names_it(tmp_path):
    sweep = [*TINY, "seed=0,1"]
    code, _, err = cli(sweep, tmp_path, multirun=True)
    assert code == 0, err
    folders = {p.parent.name: p.parent for p in (tmp_path / "multirun").rglob("COMPLETED")}
    assert len(folders) == 2
    changed = next(d for name, d in folders.items() if "seed=1" in name)
    edit_stored_config(changed, "width: 0.125", "width: 0.25")

    code, out, err = cli(sweep, tmp_path, multirun=True)
    assert code != 0
    assert "seed=0" in out and "completed earlier; skipped" in out  # the unchanged trial
    assert "model.width: 0.25 -> 0.125" in err and "trainer.fresh=true" in err
    ledger = json.loads(next((tmp_path / "multirun").rglob("sweep_ledger.json")).read_text())
    states = {key: ledger["trials"][key]["state"] for key in ledger["current"]}
    assert sorted(states.values()) == ["completed", "failed"], states
