import os
import shutil
from pathlib import Path

import pytest
import torch

from alexlab.models.lrn import LocalResponseNorm


def lrn_by_the_formula(a, n=5, alpha=1e-4, beta=0.75, k=2.0):
    """PAPER.md, Section 3.3, as a direct loop over channels."""
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


@needs_cc
@pytest.mark.parametrize("channels", [1, 3, 8, 96])
@pytest.mark.parametrize("params", [dict(), dict(size=3, alpha=0.01, beta=0.5, k=1.0)])
def test_kernel_matches_the_paper_formula(channels, params):
    assert lrn_cpu.library() is not None, "a C compiler is on PATH, so the kernel must build"
    torch.manual_seed(channels)
    a = torch.randn(3, channels, 17, 19, dtype=torch.float64) * 20  # 323 positions: one full block and a partial one
    g = torch.randn_like(a)
    p = {"size": 5, "alpha": 1e-4, "beta": 0.75, "k": 2.0, **params}
    assert lrn_cpu.usable(a.float())
    out, grad = lrn_and_grad(a.float(), g.float(), **p)
    ref = a.clone().requires_grad_()
    expected = lrn_by_the_formula(ref, n=p["size"], alpha=p["alpha"], beta=p["beta"], k=p["k"])
    expected.backward(g)
    torch.testing.assert_close(out.double(), expected.detach(), rtol=2e-6, atol=1e-6)
    torch.testing.assert_close(grad.double(), ref.grad, rtol=1e-5, atol=1e-5)


@needs_cc
def test_kernel_result_does_not_depend_on_the_thread_count():
    a, g = torch.randn(5, 24, 9, 9) * 10, torch.randn(5, 24, 9, 9)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = lrn_and_grad(a, g)
        torch.set_num_threads(2)
        two = lrn_and_grad(a, g)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one[0], two[0]) and torch.equal(one[1], two[1])


@needs_cc
def test_kernel_agrees_with_the_pytorch_path_and_keeps_nans():
    a, g = torch.randn(4, 16, 6, 6) * 10, torch.randn(4, 16, 6, 6)
    fused = lrn_and_grad(a, g)
    with lrn_cpu.disabled():
        eager = lrn_and_grad(a, g)
    torch.testing.assert_close(fused, eager, rtol=1e-5, atol=1e-6)
    a[1, 7, 2, 3] = float("nan")
    out = LocalResponseNorm()(a)
    assert out[1, 5:10, 2, 3].isnan().all() and out[0].isfinite().all()  # NaN spreads over its window only


def test_pytorch_path_when_turned_off_or_without_a_compiler(fresh_kernel, tmp_path, caplog):
    a = torch.randn(2, 8, 4, 4) * 10
    reference = lrn_by_the_formula(a.double()).float()
    fresh_kernel.setenv("ALEXLAB_LRN_KERNEL", "torch")
    assert lrn_cpu.library() is None and not lrn_cpu.usable(a)
    torch.testing.assert_close(LocalResponseNorm()(a), reference)

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
