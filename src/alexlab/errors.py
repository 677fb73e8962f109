"""Errors the command line reports in one line (key or path, and what would be valid)."""
from __future__ import annotations

import sys
from typing import NoReturn


class AlexlabError(Exception):
    """Base: printed as `alexlab: error: <message>` with exit status 2."""


class ConfigError(AlexlabError, ValueError):
    """A config value that cannot run; the message names the key and what is valid."""


class DataError(AlexlabError):
    """Missing or unreadable data; the message names the path tried and how to get the data."""


class CheckpointError(AlexlabError):
    """A checkpoint that cannot be resumed from; the message names the file and the way out."""


class DivergedError(AlexlabError):
    """The loss became NaN or infinite; the message names the epoch and step."""


class RunLocked(AlexlabError):
    """Another live process holds the run folder's lock: this command skips the run (not an error)."""


class Interrupted(BaseException):
    """SIGTERM or SIGINT stopped the command. A BaseException, as KeyboardInterrupt is: Hydra's job
    runner and a sweep's per-trial guard catch Exception only, so it reaches the command line,
    which prints the one line and ends with 128 + the signal's number (143, 130)."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


def worker_message(message: str) -> str:
    """The alexlab message inside an error a DataLoader worker raised: torch re-raises it in the
    main process as 'Caught DataError in DataLoader worker process 0.' followed by the worker's
    traceback, whose last line is 'alexlab.errors.DataError: <message>'. Other messages unchanged."""
    lines = [t for t in message.splitlines() if t.strip()]
    if len(lines) > 1 and "DataLoader worker process" in lines[0]:
        return lines[-1].split(": ", 1)[-1].strip()
    return message


def say_error(message: str) -> None:
    """The one line every command prints for an error it reports."""
    print(f"alexlab: error: {message}", file=sys.stderr, flush=True)


def say_warning(message: str) -> None:
    """A fault alexlab works around (training goes on): one line, never an error status."""
    print(f"alexlab: warning: {message}", file=sys.stderr, flush=True)


def fail(message: str, status: int = 2) -> NoReturn:
    """Print the one line and end the command with `status` (2: bad input, nothing lost)."""
    say_error(message)
    sys.exit(status)
