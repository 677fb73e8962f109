"""`alexlab-report <sweep folder | wandb:<entity>/<project>/<group>> [--out DIR]`."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import fail
from .analysis import analyse
from .load import load
from .runs import ReportError
from .render import print_console, write


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="alexlab-report",
        description="Verdict per AlexNet claim from a sweep: effects vs ablation=paper paired by seed, "
                    "95% t-intervals, Holm correction, plots. Writes report.md, report.csv and PNGs.")
    parser.add_argument("source", help="sweep folder (multirun/<sweep>/<name>, or any folder holding run folders) "
                                       "or wandb:<entity>/<project>/<group>")
    parser.add_argument("--out", type=Path, default=None,
                        help="where to write the report (default: the sweep folder; for W&B "
                             "reports/wandb/<entity>/<project>/<group>)")
    parser.add_argument("--confidence", type=float, default=0.95, help="interval level (default 0.95)")
    parser.add_argument("--alpha", type=float, default=0.05, help="family-wise error rate for Holm (default 0.05)")
    return parser.parse_args(argv)


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
        sweep = load(args.source)
        analysis = analyse(sweep, args.confidence, args.alpha)
        out = args.out or default_out(args.source)
        try:
            path = write(analysis, out)
        except OSError as err:
            raise ReportError(f"{out}: cannot write the report there ({err.strerror or err}); use --out DIR") from None
    except ReportError as err:
        fail(str(err))
    print_console(analysis, path)


if __name__ == "__main__":
    main()
