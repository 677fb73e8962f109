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
