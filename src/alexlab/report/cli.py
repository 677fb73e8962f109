"""`alexlab-report <sweep folder | wandb:<entity>/<project>/<group>> [--out DIR] [--delta CLAIM=VALUE ...]
[--plan [--max-seeds N]]`."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import AlexlabError, fail
from .analysis import analyse
from .load import load
from .plan import make_plan, print_plan, write_plan
from .runs import ReportError
from .render import print_console, write

MAX_PLAN_SEEDS = 30


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="alexlab-report",
        description="Verdict per AlexNet claim from a sweep of any design (one-at-a-time, levels, factorial, "
                    "Figure 1): effects with 95% t-intervals, Holm correction, 'no effect larger than ±δ' by "
                    "equivalence tests, plots. Writes report.md, report.csv and PNGs; --plan writes a seed plan.")
    parser.add_argument("source", help="sweep folder (multirun/<sweep>/<name>, or any folder holding run folders) "
                                       "or wandb:<entity>/<project>/<group>")
    parser.add_argument("--out", type=Path, default=None,
                        help="where to write the report (default: the sweep folder; for W&B "
                             "reports/wandb/<entity>/<project>/<group>)")
    parser.add_argument("--confidence", type=float, default=0.95, help="interval level (default 0.95)")
    parser.add_argument("--alpha", type=float, default=0.05, help="family-wise error rate for Holm (default 0.05)")
    parser.add_argument("--delta", action="append", default=[], metavar="CLAIM=VALUE",
                        help="a claim's smallest effect of interest, replacing the claims table's (pt, or a ratio > 1 "
                             "for the speed claims): --delta lrn_error=0.5 --delta relu_speed=1.5")
    parser.add_argument("--plan", action="store_true",
                        help="instead of the report: the seeds each comparison needs for 80%% power at its δ, the "
                             "command that extends the sweep to them, and <sweep>/plans/plan-<n>.json (written now, "
                             "before the new runs)")
    parser.add_argument("--max-seeds", type=int, default=MAX_PLAN_SEEDS,
                        help=f"--plan: the most seeds a plan may ask for (default {MAX_PLAN_SEEDS}); comparisons "
                             "needing more are listed, not targeted")
    return parser.parse_args(argv)


def parse_deltas(options: list[str]) -> dict:
    """['lrn_error=0.5'] -> {'lrn_error': 0.5}; a value that is not a number is kept for the check to name."""
    deltas = {}
    for option in options:
        claim, sep, value = option.partition("=")
        if not sep or not claim:
            raise ReportError(f"--delta {option}: expected <claim>=<value>, e.g. lrn_error=0.5")
        try:
            deltas[claim.strip()] = float(value)
        except ValueError:
            deltas[claim.strip()] = value
    return deltas


def default_out(source: str) -> Path:
    if source.startswith("wandb:"):
        return Path("reports/wandb") / source[len("wandb:"):].strip("/")
    return Path(source)


def main(argv=None) -> None:
    args = parse_args(argv)
    try:
        if not 0.5 <= args.confidence < 1:
            raise ReportError(f"--confidence={args.confidence} is not valid; give a level in [0.5, 1), e.g. 0.95")
        if not 0 < args.alpha < 1:
            raise ReportError(f"--alpha={args.alpha} is not valid; give a level in (0, 1), e.g. 0.05")
        if args.plan and args.source.startswith("wandb:"):
            raise ReportError("--plan needs the sweep folder (it reads multirun.yaml and writes plans/ there), "
                              "not a W&B group")
        if args.max_seeds < 2:
            raise ReportError(f"--max-seeds={args.max_seeds} is not valid; give 2 or more")
        deltas = parse_deltas(args.delta)
        sweep = load(args.source)
        analysis = analyse(sweep, args.confidence, args.alpha, deltas)
        if args.plan:
            plan = make_plan(analysis, Path(args.source), args.max_seeds)
            print_plan(plan, write_plan(plan))
            return
        out = args.out or default_out(args.source)
        try:
            path = write(analysis, out)
        except OSError as err:
            raise ReportError(f"{out}: cannot write the report there ({err.strerror or err}); use --out DIR") from None
    except AlexlabError as err:  # ReportError, or a plan file that cannot be written
        fail(str(err))
    print_console(analysis, path)


if __name__ == "__main__":
    main()
