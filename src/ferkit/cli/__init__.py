"""The ``ferkit`` command: thin subcommands over the library. Errors become one line and an exit code."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from ferkit import __version__
from ferkit.errors import FerkitError, one_line
from ferkit.extras import MissingExtraError, missing_extra_message

# Each module defines register(subparsers) and sets a ``func`` default that takes the parsed args.
EXIT_IO = 74  # sysexits' EX_IOERR: a file could not be read or written
COMMANDS = [
    "data",
    "train",
    "evaluate",
    "calibrate",
    "models",
    "predict",
    "serve",
    "ensemble",
    "export",
    "experiment",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ferkit",
        description="Facial expression recognition: train, evaluate, ensemble, export and serve models "
        "that read one of seven expressions (Angry, Disgust, Fear, Happy, Sad, Surprise, Neutral).",
    )
    parser.add_argument("--version", action="version", version=f"ferkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"ferkit.cli.{name}").register(sub)
    return parser


def _internal_error(e: Exception) -> int:
    if os.environ.get("FERKIT_DEBUG"):
        raise e
    print(
        f"ferkit: internal error: {type(e).__name__}: {one_line(e)} (set FERKIT_DEBUG=1 for a traceback)",
        file=sys.stderr,
    )
    return 70


def main(argv: list[str] | None = None) -> int:
    # OpenMP threads that spin while waiting make PyTorch 10-100x slower when the cores are shared
    # (measured: 30 vs 234 training images/s on 2 busy cores); must be set before torch loads.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except FerkitError as e:
        print(f"ferkit: error: {one_line(e)}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("ferkit: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except ModuleNotFoundError as e:  # the lean install lacks an extra: say which one to install
        advice = missing_extra_message(e.name or "", f"ferkit {args.command}")
        if advice is None:
            return _internal_error(e)
        print(f"ferkit: error: {advice}", file=sys.stderr)
        return MissingExtraError.exit_code
    except OSError as e:  # the file system said no: full disk, file-size limit, a path under a file, /proc...
        if os.environ.get("FERKIT_DEBUG"):
            raise
        where = f": {e.filename}" if e.filename else ""
        print(f"ferkit: error: {one_line(e.strerror or e)}{where}", file=sys.stderr)
        return EXIT_IO
    except Exception as e:  # noqa: BLE001 - an unexpected bug: one line, the traceback only on request
        return _internal_error(e)


if __name__ == "__main__":
    sys.exit(main())
