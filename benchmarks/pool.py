"""What alexlab's max pool (alexlab/models/pool.py: pooled in channels_last on a CPU NCHW input)
saves against torch's nn.MaxPool2d, on a preset's net as it runs: one training step (forward,
backward, SGD) and one evaluation batch, the same weights and batch for both, interleaved
A B B A. The pools alone (forward+backward per call) are timed too. Both give the same numbers
(checked here on the step's loss and gradients, and in tests/test_models.py).

    .venv/bin/python benchmarks/pool.py --threads 1          # fmnist_quick, as the demo's runs take it
    .venv/bin/python benchmarks/pool.py --threads 2 --experiment fmnist_quick

Last line: `step_speedup=<torch pool step time / alexlab pool step time> eval_speedup=<same, eval batch>`.
"""
from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import compose, eval_batch_size, header, summary, time_call  # noqa: E402

from alexlab.models.pool import MaxPool2d  # noqa: E402
from alexlab.train import build  # noqa: E402


def with_torch_pools(net: torch.nn.Module) -> torch.nn.Module:
    """A copy of `net` whose max pools are torch's own nn.MaxPool2d with the same settings."""
    other = copy.deepcopy(net)
    for parent in other.modules():
        for name, child in parent.named_children():
            if isinstance(child, MaxPool2d):
                setattr(parent, name, torch.nn.MaxPool2d(child.kernel_size, child.stride, child.padding,
                                                         child.dilation, ceil_mode=child.ceil_mode))
    return other


def main(argv=None) -> str:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--experiment", default="fmnist_quick", help="the preset ('' for none)")
    p.add_argument("--override", action="append", default=[], help="extra config override (repeatable)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--rounds", type=int, default=20, help="timed repetitions of each variant")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cpu = torch.device("cpu")
    preset = [f"experiment={args.experiment}"] if args.experiment else []
    cfg = compose([*preset, "trainer.precision=32-true", "model.channels_last=false", *args.override])
    dm, net, module = build(cfg)
    dm.prepare_data()
    dm.setup("fit")
    x, y = next(iter(dm.train_dataloader()))
    x = module.transform.train_batch(x)
    eval_size = eval_batch_size(cfg.data.batch_size, cpu)
    eval_x = torch.cat([x] * (eval_size // len(x) + 1))[:eval_size]
    print(header(cpu, f"max pool, {args.experiment or 'the default'} net, fp32 NCHW, batch {len(x)} (eval {len(eval_x)})"))
    nets = {"alexlab": net, "torch": with_torch_pools(net)}

    def step(model):
        model.train()
        model.zero_grad(set_to_none=True)
        torch.manual_seed(0)  # the same dropout masks for both
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        return loss

    losses = {k: step(m) for k, m in nets.items()}  # also a warm-up
    grads = {k: [q.grad for q in m.parameters()] for k, m in nets.items()}
    same = torch.equal(losses["alexlab"], losses["torch"]) and all(
        torch.equal(a, b) for a, b in zip(grads["alexlab"], grads["torch"]))
    print(f"check: same loss and gradients as torch's pool: {same}")

    def evaluate(model):
        model.eval()
        with torch.no_grad():
            return model(eval_x)

    pools = [(m, tuple(m_in.shape)) for m, m_in in _pool_inputs(net, x)]
    times = {f"{what} {k}": [] for what in ("step", "eval") for k in nets}
    times.update({f"pool {shape} {k}": [] for _, shape in pools for k in nets})
    for r in range(args.rounds):
        order = list(nets) if r % 2 == 0 else list(reversed(nets))
        for k in order:
            times[f"step {k}"].append(time_call(lambda: step(nets[k]), cpu))
            times[f"eval {k}"].append(time_call(lambda: evaluate(nets[k]), cpu))
            for pool, shape in pools:
                fn = pool.forward if k == "alexlab" else super(MaxPool2d, pool).forward
                inp = torch.relu(torch.randn(shape)).requires_grad_()
                times[f"pool {shape} {k}"].append(time_call(lambda: fn(inp).sum().backward(), cpu))
    med = {k: summary(v)["median"] for k, v in times.items()}
    for k, v in med.items():
        print(f"{k:42s} {v * 1e3:8.2f} ms  (spread {summary(times[k])['spread']:.0%})")
    line = (f"step_speedup={med['step torch'] / med['step alexlab']:.2f} "
            f"eval_speedup={med['eval torch'] / med['eval alexlab']:.2f}")
    print(line)
    return line


def _pool_inputs(net: torch.nn.Module, x: torch.Tensor):
    """(pool, its input) for every max pool of `net` on batch x."""
    seen = []
    hooks = [m.register_forward_hook(lambda mod, inp, out: seen.append((mod, inp[0].detach())))
             for m in net.modules() if isinstance(m, MaxPool2d)]
    with torch.no_grad():
        net(x)
    for h in hooks:
        h.remove()
    return seen


if __name__ == "__main__":
    main()
