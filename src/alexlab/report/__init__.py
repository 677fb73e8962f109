"""Runs -> claims -> verdicts: `alexlab-report` and the functions the notebook uses.

    sweep = load("multirun/demo/default")      # or "wandb:<entity>/<project>/<group>"
    analysis = analyse(sweep)                   # effects, verdicts, warnings
    path = write(analysis, out)                 # report.md, report.csv, PNGs
"""
from .analysis import Analysis, analyse
from .claims import CLAIMS, METRICS, TRICKS, Claim
from .load import load
from .runs import ReportError, Sweep
from .render import print_console, write
from .stats import holm, paired_interval, paired_p, seeds_needed, times_p

__all__ = ["Analysis", "analyse", "CLAIMS", "METRICS", "TRICKS", "Claim", "ReportError", "Sweep", "load",
           "print_console", "write", "holm", "paired_interval", "paired_p", "seeds_needed", "times_p"]
