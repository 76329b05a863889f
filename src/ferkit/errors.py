"""One error type per failure family; the CLI and the app turn them into one line or a 4xx."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path


class FerkitError(Exception):
    """Base class: an expected failure with a message meant for the user."""

    exit_code = 1


class DataError(FerkitError):
    """Missing, malformed or unreadable data."""

    exit_code = 3


class ConfigError(FerkitError):
    """Unknown or badly typed configuration field."""

    exit_code = 2


class ModelError(FerkitError):
    """Unknown model, bad model arguments, or a checkpoint that cannot be used."""

    exit_code = 4


class InputError(FerkitError):
    """Bad input to inference: empty, malformed or undecodable images."""

    exit_code = 5


def one_line(e: object, limit: int = 500) -> str:
    """``e``'s text on one line (whitespace runs collapsed), cut at ``limit`` characters."""
    text = " ".join(str(e).split())
    return text if len(text) <= limit else text[:limit] + "..."


def run_script(main: Callable[[], int | None]) -> int:
    """Run a script's ``main``: a FerkitError (bad input) is one line on stderr and its exit code, an
    OSError one line and 1, never a traceback. For benchmarks/ and scripts/ (the CLI has its own)."""
    try:
        return main() or 0
    except (FerkitError, OSError) as e:  # OSError: an unwritable output, a full disk
        print(f"{Path(sys.argv[0]).name}: error: {one_line(e)}", file=sys.stderr)
        return getattr(e, "exit_code", 1)
