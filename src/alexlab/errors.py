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


def say_error(message: str) -> None:
    """The one line every command prints for an error it reports."""
    print(f"alexlab: error: {message}", file=sys.stderr, flush=True)


def fail(message: str, status: int = 2) -> NoReturn:
    """Print the one line and end the command with `status` (2: bad input, nothing lost)."""
    say_error(message)
    sys.exit(status)
