"""The speed work of issue 8 changes no result: the fast LRN is the paper's formula in every code
path (CPU slices of the batch, channels_last, bf16), the cheaper per-step seeding draws the same numbers,
checkpoints hold the network once, the divergence guard still stops; the benchmark scripts run, and
measure what they say (P8: the fast mode against fp32 NCHW and against the hand loop in that mode)."""
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from scipy import stats

import alexlab.models.lrn as lrn
from alexlab.callbacks import DivergenceGuard
from alexlab.errors import DivergedError
from alexlab.module import seed_device
from alexlab.precision import hardware_mode
from alexlab.train import build

from conftest import REPO, compose_cfg
from test_report import BASE_CONFIG
from test_lrn import lrn_by_the_formula as formula

BENCH = REPO / "benchmarks"


@pytest.mark.parametrize("chunk", [1, 40, 10**9])  # slices of one image, of a few, the whole batch
@pytest.mark.parametrize("n", [1, 2, 5, 6])
def test_lrn_slices_of_the_batch_give_the_formula_and_its_gradient(monkeypatch, chunk, n):
    monkeypatch.setattr(lrn, "CHUNK", chunk)
    torch.manual_seed(n)
    a = (torch.randn(7, 9, 3, 4, dtype=torch.float64) * 20).requires_grad_()
    b = a.detach().clone().requires_grad_()
    g = torch.randn(7, 9, 3, 4, dtype=torch.float64)
    ours, ref = lrn.local_response_norm(a, n, 1e-3, 0.75, 2.0), formula(b, n, 1e-3, 0.75, 2.0)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    ours.backward(g)
    ref.backward(g)
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-12)


def test_lrn_gradcheck_and_no_silent_double_backward():
    a = torch.randn(3, 6, 2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: lrn.local_response_norm(t * 5, 5, 0.01, 0.75, 2.0), a)
    with pytest.raises(RuntimeError, match="double backward"):
        torch.autograd.gradgradcheck(lambda t: lrn.local_response_norm(t * 5, 5, 0.01, 0.75, 2.0), a)


def test_lrn_channels_last_and_expanded_gradients():
    torch.manual_seed(0)
    x = (torch.randn(6, 16, 5, 5) * 10).contiguous(memory_format=torch.channels_last).requires_grad_()
    x2 = x.detach().contiguous().requires_grad_()
    y, y2 = lrn.local_response_norm(x), lrn.local_response_norm(x2)
    assert y.is_contiguous(memory_format=torch.channels_last)
    y.sum().backward()  # an expanded (stride-0) gradient
    y2.sum().backward()
    torch.testing.assert_close(y, y2)
    torch.testing.assert_close(x.grad, x2.grad)


def test_lrn_under_bf16_autocast_keeps_the_dtype_and_the_formula():
    torch.manual_seed(0)
    x = (torch.randn(2, 24, 3, 3) * 30).bfloat16().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = lrn.local_response_norm(x)
    assert y.dtype == torch.bfloat16
    expected = formula(x.detach().double())
    torch.testing.assert_close(y.double(), expected, rtol=2 ** -8, atol=0)  # one bf16 rounding
    y.float().sum().backward()
    assert x.grad.dtype == torch.bfloat16 and torch.isfinite(x.grad).all()


def test_step_seeding_draws_what_torch_manual_seed_draws():
    seed_device(torch.device("cpu"), 1234)
    ours = (torch.rand(5), torch.randn(3), torch.randint(0, 9, (4,)))
    torch.manual_seed(1234)
    theirs = (torch.rand(5), torch.randn(3), torch.randint(0, 9, (4,)))
    for a, b in zip(ours, theirs):
        assert torch.equal(a, b)


@pytest.mark.parametrize("compile", [False, True])
def test_checkpoint_holds_the_network_once_with_or_without_compile(tiny, tmp_path, compile):
    _, net, module = build(compose_cfg(tiny + [f"model.compile={str(compile).lower()}"], tmp_path))
    keys = set(module.state_dict())
    assert keys == {f"model.{k}" for k in net.state_dict()} | {k for k in keys if k.startswith("transform.")}
    assert not any(k.startswith("forward_fn") for k in keys)


class _Trainer:
    current_epoch, global_step, num_training_batches = 2, 17, 5


def test_divergence_guard_on_cpu_stops_at_the_bad_step():
    guard, trainer = DivergenceGuard(), _Trainer()
    for batch_idx, loss in ((1, torch.tensor(1.5)), (3, torch.tensor(math.nan))):
        guard.on_train_batch_start(trainer, None, None, batch_idx)
        if math.isfinite(loss):
            guard.on_train_batch_end(trainer, None, {"loss": loss}, None, batch_idx)
    with pytest.raises(DivergedError, match=r"loss is nan at epoch 2, step 17 \(batch 3\)"):
        guard.on_train_batch_end(trainer, None, {"loss": loss}, None, 3)
    with pytest.raises(DivergedError, match="loss is inf"):
        guard.on_train_batch_end(trainer, None, torch.tensor(math.inf), None, 4)


def run_script(args, timeout=240):
    proc = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.slow
def test_pool_benchmark_checks_the_same_numbers_and_prints_both_speedups_last():
    out = run_script([BENCH / "pool.py", "--experiment", "", "--override", "data=synthetic", "--override",
                      "model.width=0.125", "--override", "data.batch_size=16", "--rounds", "2", "--threads", "1"])
    assert "check: same loss and gradients as torch's pool: True" in out
    assert re.fullmatch(r"step_speedup=\d+\.\d\d eval_speedup=\d+\.\d\d", out.strip().splitlines()[-1])


@pytest.mark.slow
def test_throughput_benchmark_prints_both_sides_and_the_ratio_last():
    out = run_script([BENCH / "throughput.py", "--data", "synthetic", "--train-images", "64", "--eval-images", "32",
                      "--batch-size", "32", "--width", "0.125", "--rounds", "1", "--threads", "1", "--data-share"])
    lines = out.strip().splitlines()
    assert lines[-1].startswith("ratio=") and float(lines[-1].split("=")[1]) > 0
    assert any(line.startswith("round 1:") and "alexlab" in line and "hand" in line for line in lines)
    assert any("data_share=" in line for line in lines)


# the fmnist_quick preset shrunk: synthetic images, a narrow net, short epochs
SMALL_DEMO = ["data=synthetic", "data.num_train=64", "data.num_test=32", "data.train_subset=null",
              "data.test_subset=null", "eval.train_clean_size=32", "model.width=0.125"]


def overrides(values):
    return [arg for value in values for arg in ("--override", value)]


@pytest.mark.slow
def test_throughput_benchmark_times_the_fast_mode_against_fp32_nchw_and_the_hand_loop_in_one_run():
    out = run_script([BENCH / "throughput.py", "--experiment", "fmnist_quick", "--fast", "--baseline", "--epochs", "2",
                      "--rounds", "1", "--threads", "1", *overrides(SMALL_DEMO)])
    lines = out.strip().splitlines()
    fast = hardware_mode("cpu").line().removeprefix("alexlab: ")
    assert f"alexlab: {fast}" in lines and f"hand: {fast}" in lines and "baseline: fp32, NCHW (as set)" in lines
    assert "64 images x 2 epochs a round" in lines[0]
    round_line = next(line for line in lines if line.startswith("round 1:"))
    assert all(name in round_line for name in ("alexlab", "hand", "baseline"))
    assert lines[-2].startswith("speedup=") and lines[-1].startswith("ratio=")
    assert float(lines[-2].split("=")[1]) > 0 and float(lines[-1].split("=")[1]) > 0


def test_the_hand_loop_evaluates_in_alexlabs_batches_and_on_alexlabs_epochs(tiny, tmp_path):
    sys.path.insert(0, str(BENCH))
    from common import eval_batch_size
    from throughput import evaluated

    cfg = compose_cfg(tiny + ["eval.every_n_epochs=5", "trainer.max_epochs=12", "data.val_size=0"], tmp_path)
    dm, _, _ = build(cfg)
    assert eval_batch_size(cfg.data.batch_size, torch.device("cpu")) == dm.train_clean_dataloader().batch_size
    assert [e for e in range(12) if evaluated(e, cfg)] == [4, 9, 11]


@pytest.mark.slow
def test_eval_batches_benchmark_times_fp32_and_bf16_evaluation():
    out = run_script([BENCH / "eval_batches.py", "--rounds", "1", "--threads", "1", *overrides(SMALL_DEMO)])
    lines = out.strip().splitlines()
    assert sum("ms a pass" in line for line in lines) == 4  # train_clean and test, fp32 and bf16
    assert lines[-1].startswith("eval_bf16_speedup=") and float(lines[-1].split("=")[1]) > 0


@pytest.mark.slow
def test_sweep_rate_benchmark_times_one_and_two_trials_at_once():
    out = run_script([BENCH / "sweep_rate.py", "--trials", "1", "--epochs", "1", "--jobs", "1,2", "--cores", "2",
                      *overrides(SMALL_DEMO)], timeout=300)
    lines = out.strip().splitlines()
    assert any(line.startswith("n_jobs=1:") for line in lines) and any(line.startswith("n_jobs=2:") for line in lines)
    assert lines[-1].startswith("sweep_speedup=") and float(lines[-1].split("=")[1]) > 0


def fake_sweep(root: Path, precision_used: str, channels_last: bool, finals: dict) -> Path:
    """A sweep folder of completed runs, one per seed, with these final rows."""
    for seed, final in finals.items():
        run = root / f"seed={seed}"
        run.mkdir(parents=True)
        (run / "summary.json").write_text(json.dumps(
            {"status": "completed", "seed": seed, "ablation": "paper", "job": run.name, "name": "fmnist_quick",
             "final": final, "precision_used": precision_used, "channels_last_used": channels_last}))
        (run / "COMPLETED").write_text("")
        (run / "config.yaml").write_text(yaml.safe_dump({**BASE_CONFIG, "name": "fmnist_quick", "seed": seed}))
    return root


def test_pair_modes_pairs_by_seed_and_gives_the_t_interval_scipy_gives(tmp_path):
    a_acc, b_acc = [0.80, 0.78, 0.81, 0.79, 0.80], [0.805, 0.775, 0.82, 0.79, 0.80]
    a = fake_sweep(tmp_path / "a", "32-true", False, {s: {"test/acc": v, "gap": 0.05} for s, v in enumerate(a_acc)})
    b = fake_sweep(tmp_path / "b", "bf16-mixed", True,
                   {s: {"test/acc": v, "gap": 0.05} for s, v in list(enumerate(b_acc))[::-1]})  # other order
    proc = subprocess.run([sys.executable, BENCH / "pair_modes.py", a, b], capture_output=True, text=True, timeout=120)
    lines = proc.stdout.strip().splitlines()
    assert lines[0] == "A: precision 32-true, channels_last False" and lines[1].startswith("B: precision bf16-mixed")
    d = [(y - x) * 100 for x, y in zip(a_acc, b_acc)]
    low, high = stats.t.interval(0.95, len(d) - 1, loc=sum(d) / len(d), scale=stats.sem(d))
    acc = next(line for line in lines if line.startswith("test/acc:"))
    assert f"[{low:+.2f}, {high:+.2f}] pt" in acc and "5 pairs" in acc
    assert "gap: B - A = +0.00 pt over 5 pairs, 95% interval [+0.00, +0.00]" in proc.stdout  # all equal: that value
    inside = abs(low) <= 1 and abs(high) <= 1
    assert lines[-1] == f"same_science={'yes' if inside else 'no'}" and proc.returncode == (0 if inside else 1)


@pytest.mark.slow
def test_lrn_benchmark_checks_exactness_and_reports_the_share():
    out = run_script([BENCH / "lrn.py", "--skip-227", "--batch-small", "4", "--rounds", "1", "--threads", "1"])
    check = next(line for line in out.splitlines() if line.startswith("check:"))
    values = dict(part.split("=") for part in check.split(": ")[-1].split(" (")[0].split())
    assert float(values["float64"]) < 1e-12 and float(values["float32"]) < 1e-5
    assert out.strip().splitlines()[-1].startswith("lrn_share_small=")


@pytest.mark.slow
def test_lrn_benchmark_in_the_fast_mode_checks_and_times_the_mode_auto_picks():
    out = run_script([BENCH / "lrn.py", "--fast", "--skip-227", "--batch-small", "4", "--rounds", "1", "--threads", "1"])
    mode = hardware_mode("cpu")
    assert f"fast mode: {mode.line().removeprefix('alexlab: ')}" in out
    key = f"{'bf16' if mode.precision.startswith('bf16') else 'fp32'}{'_channels_last' if mode.channels_last else ''}"
    check = next(line for line in out.splitlines() if line.startswith("check:"))
    assert key == "fp32" or f" {key}=" in check
    assert out.strip().splitlines()[-1].startswith("lrn_share_small=")


def test_gpu_checks_lists_every_step():
    out = run_script([BENCH / "gpu_checks.py", "--list"], timeout=60)
    names = [line.split()[0] for line in out.splitlines()]
    assert names == ["p1_small", "divergence", "p7_227", "p6_lrn", "p5_pool", "p4_speed", "p4_accuracy",
                     "p7_compile", "p6_compiled"]
    assert "launcher.trials_per_gpu=8" in out and "--mfu" in out and "--data-share" in out
