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


def run_script(main: Callable[[], int | None]) -> int:
    """Run a script's ``main``: a FerkitError (bad input) is one line on stderr and its exit code, never a
    traceback. For the scripts in benchmarks/ and scripts/ (the CLI has its own handler)."""
    try:
        return main() or 0
    except FerkitError as e:
        print(f"{Path(sys.argv[0]).name}: error: {e}", file=sys.stderr)
        return e.exit_code
