import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from alexlab.models.lrn import LocalResponseNorm


def lrn_by_the_formula(a, n=5, alpha=1e-4, beta=0.75, k=2.0):
    """docs/PAPER.md (the paper's Section 3.3), as a direct loop over channels."""
    N = a.shape[1]
    b = torch.empty_like(a)
    for i in range(N):
        lo, hi = max(0, i - n // 2), min(N - 1, i + n // 2)
        s = sum(a[:, j] ** 2 for j in range(lo, hi + 1))
        b[:, i] = a[:, i] / (k + alpha * s) ** beta
    return b


@pytest.mark.parametrize("channels", [1, 3, 5, 8, 96])
@pytest.mark.parametrize("params", [dict(), dict(n=3, alpha=0.01, beta=0.5, k=1.0)])
def test_matches_the_paper_formula(channels, params):
    torch.manual_seed(channels)
    a = torch.randn(2, channels, 4, 5, dtype=torch.float64) * 20  # big enough that the window sum matters
    p = {"n": 5, "alpha": 1e-4, "beta": 0.75, "k": 2.0, **params}
    ours = LocalResponseNorm(size=p["n"], alpha=p["alpha"], beta=p["beta"], k=p["k"])(a)
    expected = lrn_by_the_formula(a, **p)
    torch.testing.assert_close(ours, expected, rtol=1e-12, atol=1e-12)
    # the edge channels really see a clipped window (and it changes the result)
    assert not torch.allclose(ours, a / p["k"] ** p["beta"])


def test_alpha_is_not_divided_by_n_unlike_torch():
    a = torch.randn(2, 16, 3, 3) * 10
    ours = LocalResponseNorm(5, 1e-4, 0.75, 2.0)(a)
    torch.testing.assert_close(ours, torch.nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0)(a))
    assert not torch.allclose(ours, torch.nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)(a))


def test_gradient_matches_the_formula():
    a = (torch.randn(1, 7, 2, 2, dtype=torch.float64) * 5).requires_grad_()
    b = a.detach().clone().requires_grad_()
    LocalResponseNorm()(a).pow(2).sum().backward()
    lrn_by_the_formula(b).pow(2).sum().backward()
    torch.testing.assert_close(a.grad, b.grad)


# --- the fused CPU kernel (lrn_cpu.c), used for float32 CPU tensors when a C compiler exists ---

from alexlab.errors import AlexlabError  # noqa: E402
from alexlab.models import lrn_cpu  # noqa: E402

needs_cc = pytest.mark.skipif(not (os.environ.get("CC") or shutil.which("cc")), reason="no C compiler here")


@pytest.fixture
def fresh_kernel(monkeypatch):
    """library() reads the environment once per process; clear it around a test that changes it."""
    lrn_cpu.library.cache_clear()
    yield monkeypatch
    monkeypatch.undo()
    lrn_cpu.library.cache_clear()


def lrn_and_grad(a, g, **params):
    a = a.detach().clone().requires_grad_()
    out = LocalResponseNorm(**params)(a)
    out.backward(g)
    return out.detach(), a.grad


LAYOUTS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}


@pytest.fixture
def kernel_calls(monkeypatch):
    """(kernel function, dtype of x) for every call into the fused C kernel."""
    calls, real = [], lrn_cpu._call

    def spy(fn, tensors, x, *args):
        calls.append((fn.__name__, x.dtype))
        return real(fn, tensors, x, *args)

    monkeypatch.setattr(lrn_cpu, "_call", spy)
    return calls


def formula_and_grad(a, g, size=5, alpha=1e-4, beta=0.75, k=2.0):
    """The paper's formula and its autograd gradient, in float64; in one thread, since its hundreds
    of tiny ops wait at every OpenMP barrier for a busy core."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        a = a.detach().double().requires_grad_()
        out = lrn_by_the_formula(a, n=size, alpha=alpha, beta=beta, k=k)
        out.backward(g.double())
    finally:
        torch.set_num_threads(before)
    return out.detach(), a.grad


WINDOWS = ([pytest.param(n, {}, id=f"n={n}") for n in (*range(1, 8), 9)]
           + [pytest.param(n, dict(alpha=0.01, beta=0.5, k=1.0), id=f"n={n},a=.01,b=.5,k=1") for n in (3, 6)])


@needs_cc
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("size, params", WINDOWS)
@pytest.mark.parametrize("channels", [1, 3, 8, 96])  # 1 and 3: fewer channels than the window
def test_kernel_matches_the_paper_formula(kernel_calls, layout, size, params, channels):
    """n = 3, 5, 7 take the kernel's unrolled NHWC window, the others its general one."""
    assert lrn_cpu.library() is not None, "a C compiler is on PATH, so the kernel must build"
    torch.manual_seed(channels * 10 + size)
    # 3 x 323 positions: NCHW, one full block of 256 and a partial one; NHWC, steps of whole pixels and a partial last
    a = torch.randn(3, channels, 17, 19, dtype=torch.float64) * 20
    g = torch.randn_like(a)
    p = {"size": size, "alpha": 1e-4, "beta": 0.75, "k": 2.0, **params}
    fmt = LAYOUTS[layout]
    x = a.float().contiguous(memory_format=fmt)
    out, grad = lrn_and_grad(x, g.float().contiguous(memory_format=fmt), **p)
    assert kernel_calls == [("lrn_forward", torch.float32), ("lrn_backward", torch.float32)]
    assert out.is_contiguous(memory_format=fmt) and grad.is_contiguous(memory_format=fmt)  # the next conv keeps it
    expected, expected_grad = formula_and_grad(x, g, **p)
    torch.testing.assert_close(out.double(), expected, rtol=2e-6, atol=1e-6)
    torch.testing.assert_close(grad.double(), expected_grad, rtol=1e-5, atol=1e-5)


@needs_cc
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("channels", [3, 24, 260])  # 260: one pixel per NHWC step
def test_kernel_takes_bf16_and_gives_the_float32_result_rounded_to_bf16(kernel_calls, layout, channels):
    torch.manual_seed(channels)
    fmt = LAYOUTS[layout]
    a = (torch.randn(2, channels, 7, 9) * 20).bfloat16().contiguous(memory_format=fmt)
    g = torch.randn(2, channels, 7, 9).bfloat16().contiguous(memory_format=fmt)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # as in a bf16-mixed training step
        out, grad = lrn_and_grad(a, g)
    assert kernel_calls == [("lrn_forward", torch.bfloat16), ("lrn_backward", torch.bfloat16)]  # no float32 copies
    assert out.dtype == grad.dtype == torch.bfloat16
    assert out.is_contiguous(memory_format=fmt) and grad.is_contiguous(memory_format=fmt)
    out32, grad32 = lrn_and_grad(a.float(), g.float())  # computed in float32 (in bf16 2 + 1e-4*s would round to 2)
    one_bf16_step = dict(rtol=2 ** -7, atol=0)
    torch.testing.assert_close(out.float(), out32.bfloat16().float(), **one_bf16_step)
    torch.testing.assert_close(grad.float(), grad32.bfloat16().float(), **one_bf16_step)
    expected, expected_grad = formula_and_grad(a, g)
    torch.testing.assert_close(out.double(), expected, rtol=2 ** -8, atol=0)  # one bf16 rounding of the formula
    torch.testing.assert_close(grad.double(), expected_grad, rtol=2 ** -8, atol=1e-5)


@needs_cc
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_kernel_result_does_not_depend_on_the_thread_count(kernel_calls, layout, dtype):
    fmt = LAYOUTS[layout]
    # 405 pixels: the 1- and 2-thread splits of NCHW blocks and of NHWC steps differ, last step partial
    a = (torch.randn(5, 24, 9, 9) * 10).to(dtype).contiguous(memory_format=fmt)
    g = torch.randn(5, 24, 9, 9).to(dtype).contiguous(memory_format=fmt)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = lrn_and_grad(a, g)
        torch.set_num_threads(2)
        two = lrn_and_grad(a, g)
    finally:
        torch.set_num_threads(before)
    assert kernel_calls == [("lrn_forward", dtype), ("lrn_backward", dtype)] * 2
    assert torch.equal(one[0], two[0]) and torch.equal(one[1], two[1])


@needs_cc
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_kernel_agrees_with_the_pytorch_path_and_keeps_nans(kernel_calls, layout, dtype):
    fmt, other = LAYOUTS[layout], LAYOUTS["nchw" if layout == "channels_last" else "channels_last"]
    a = (torch.randn(4, 16, 6, 6) * 10).to(dtype).contiguous(memory_format=fmt)
    g = torch.randn(4, 16, 6, 6).to(dtype).contiguous(memory_format=other)  # a gradient in the other layout
    fused = lrn_and_grad(a, g)
    assert kernel_calls == [("lrn_forward", dtype), ("lrn_backward", dtype)]
    with lrn_cpu.disabled():
        eager = lrn_and_grad(a, g)
    tolerance = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=2 ** -7, atol=0)
    torch.testing.assert_close(fused, eager, **tolerance)
    a[1, 7, 2, 3] = float("nan")
    out = LocalResponseNorm()(a)
    assert out[1, 5:10, 2, 3].isnan().all() and out[1, :5, 2, 3].isfinite().all() and out[1, 10:, 2, 3].isfinite().all()
    assert out[0].isfinite().all() and out[1, :, 2, 2].isfinite().all()  # NaN spreads over its window only


def test_pytorch_path_when_turned_off_or_without_a_compiler(fresh_kernel, tmp_path, caplog):
    a = torch.randn(2, 8, 4, 4) * 10
    reference = lrn_by_the_formula(a.double()).float()
    fresh_kernel.setenv("ALEXLAB_LRN_KERNEL", "torch")
    assert lrn_cpu.library() is None and not lrn_cpu.usable(a)
    torch.testing.assert_close(LocalResponseNorm()(a), reference)
    channels_last = a.contiguous(memory_format=torch.channels_last)
    assert not lrn_cpu.usable(channels_last) and not lrn_cpu.usable(a.bfloat16())
    torch.testing.assert_close(LocalResponseNorm()(channels_last), reference)
    bf16 = a.bfloat16()  # the PyTorch ops in float32, rounded once
    expected = lrn_by_the_formula(bf16.double())
    torch.testing.assert_close(LocalResponseNorm()(bf16).double(), expected, rtol=2 ** -8, atol=0)

    lrn_cpu.library.cache_clear()
    fresh_kernel.setenv("ALEXLAB_LRN_KERNEL", "off")  # not a value: named, with the valid ones
    with pytest.raises(AlexlabError, match="ALEXLAB_LRN_KERNEL='off' is not valid; use auto .* or torch"):
        LocalResponseNorm()(a)

    lrn_cpu.library.cache_clear()
    fresh_kernel.setenv("ALEXLAB_LRN_KERNEL", "auto")
    fresh_kernel.setenv("CC", str(tmp_path / "no-such-cc"))
    with caplog.at_level("WARNING"):
        assert lrn_cpu.library() is None
    assert "fused CPU LRN not available" in caplog.text and "no-such-cc" in caplog.text
    torch.testing.assert_close(LocalResponseNorm()(a), reference)


@needs_cc
def test_a_corrupt_cached_library_is_rebuilt(fresh_kernel, tmp_path):
    fresh_kernel.setenv("ALEXLAB_CACHE_DIR", str(tmp_path / "first"))
    name = Path(lrn_cpu.library()._name).name
    lrn_cpu.library.cache_clear()
    fresh_kernel.setenv("ALEXLAB_CACHE_DIR", str(tmp_path / "second"))
    (tmp_path / "second").mkdir()
    (tmp_path / "second" / name).write_bytes(b"half a library")  # e.g. a copy cut short
    assert lrn_cpu.library() is not None
    assert (tmp_path / "second" / name).stat().st_size > 1000
    assert [p.name for p in (tmp_path / "second").iterdir()] == [name]  # no temporary files left


@needs_cc
def test_without_a_usable_openmp_runtime_it_builds_the_one_thread_kernel(fresh_kernel, tmp_path):
    fresh_kernel.setenv("ALEXLAB_CACHE_DIR", str(tmp_path))
    fresh_kernel.setattr(lrn_cpu, "openmp_runtime", lambda: str(tmp_path / "missing" / "libgomp.so.1"))
    assert lrn_cpu.library() is not None
    a, g = torch.randn(3, 16, 5, 5) * 10, torch.randn(3, 16, 5, 5)
    fused = lrn_and_grad(a, g)
    with lrn_cpu.disabled():
        torch.testing.assert_close(fused, lrn_and_grad(a, g), rtol=1e-5, atol=1e-6)


@needs_cc
@pytest.mark.slow
def test_lrn_benchmark_checks_the_fast_mode_it_times_and_says_the_kernel_serves_it():
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, repo / "benchmarks" / "lrn.py", "--channels-last", "--dtype", "bf16",
                           "--skip-227", "--batch-small", "4", "--rounds", "1", "--threads", "1"],
                          cwd=repo, capture_output=True, text=True, timeout=240,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    check = next(line for line in proc.stdout.splitlines() if line.startswith("check:"))
    assert check.endswith("(bf16_channels_last through the fused C kernel)")
    values = dict(part.split("=") for part in check.split(": ")[-1].split(" (")[0].split())
    assert float(values["float32"]) < 1e-5 and float(values["bf16_channels_last"]) < 2 ** -7  # one bf16 rounding
    assert proc.stdout.strip().splitlines()[-1].startswith("lrn_share_small=")
