"""``ferkit train``: train a model from a config file plus key=value overrides."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import yaml

from ferkit.config import load_train_config, load_yaml, to_dict
from ferkit.errors import ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a model (official protocol: Training -> PublicTest; PrivateTest never seen)",
        description="Train a model. Settings come from the defaults, then --config FILE, then key=value "
        "overrides (e.g. lr=0.001 augment.rotation=15 model=vgg_fer). Writes best.pt, last.pt, "
        "metrics.jsonl and curves.png to --out. Shipped configs (by name): "
        "paper, tuned, cpu. Multi-GPU: torchrun --nproc_per_node=N -m ferkit.cli train ...",
        epilog="Fields: see ferkit.config.TrainConfig (ferkit train --show-config prints them all).",
    )
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. epochs=30")
    p.add_argument("-c", "--config", help="YAML config file, or a shipped config name: paper, tuned, cpu")
    p.add_argument(
        "--data", help="dataset path (FER2013 CSV or folders); same as data=PATH (required to train)"
    )
    p.add_argument("-o", "--out", help="run folder; same as out=DIR")
    p.add_argument(
        "--skip-bad",
        action="store_true",
        help="skip unreadable images and rows (counted in the log and data.json) instead of stopping; "
        "same as skip_bad=true",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its last.pt, with the run's saved config (only epochs, "
        "early_stopping, threads, device, progress, data and skip_bad may change)",
    )
    p.add_argument("--show-config", action="store_true", help="print the resolved config and exit")
    p.set_defaults(func=run)


class _ConsoleHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stdout`` (or ``sys.stderr``) is when a record comes: tests swap them."""

    def __init__(self, to_stderr: bool) -> None:
        super().__init__()
        self.to_stderr = to_stderr

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr if self.to_stderr else sys.stdout
        super().emit(record)


def log_to_console() -> None:
    """Show ferkit's progress log (per-epoch lines) on stdout and its warnings on stderr: the library only
    logs, the command line decides where it goes. Idempotent."""
    logger = logging.getLogger("ferkit")
    if any(isinstance(h, _ConsoleHandler) for h in logger.handlers):
        return
    info = _ConsoleHandler(to_stderr=False)
    info.addFilter(lambda record: record.levelno < logging.WARNING)
    info.setFormatter(logging.Formatter("%(message)s"))
    warn = _ConsoleHandler(to_stderr=True)
    warn.setLevel(logging.WARNING)
    warn.setFormatter(logging.Formatter("ferkit: warning: %(message)s"))
    logger.addHandler(info)
    logger.addHandler(warn)
    logger.setLevel(logging.INFO)


def run(args: argparse.Namespace) -> int:

    # Paths are taken as they are, not parsed as YAML.
    values: dict[str, object] = {k: v for k, v in (("data", args.data), ("out", args.out)) if v}
    if args.skip_bad:
        values["skip_bad"] = True
    config_file = args.config
    if args.resume and not config_file:  # continue with the run's own settings
        out = values.get("out") or load_train_config(None, args.overrides).out
        config_file = Path(str(out)) / "config.yaml"
    cfg = load_train_config(config_file, args.overrides, values)
    if args.show_config:
        print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")
        return 0
    saved = Path(cfg.out) / "config.yaml"
    if cfg.data is None and args.resume and saved.is_file():  # `-c cpu --resume`: the run's own data
        cfg.data = load_yaml(saved).get("data")
    if cfg.data is None:
        raise ConfigError("no training data: pass --data PATH or data=PATH")
    from ferkit.training.loop import fit

    log_to_console()
    summary = fit(cfg, resume=args.resume)
    if int(os.environ.get("RANK", "0")) == 0:
        print(
            f"done: {summary['epochs_this_run']} epochs this run, best validation accuracy "
            f"{summary['best_val_acc']:.4f}; checkpoints in {summary['out']}"
        )
    return 0
