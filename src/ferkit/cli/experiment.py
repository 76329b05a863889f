"""``ferkit experiment``: run a named grid of training runs and write its results table."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ferkit.cli.train import log_to_console
from ferkit.errors import ConfigError
from ferkit.runtime import TTA_MODES


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "experiment",
        help="run the study's experiment grid (official protocol, and the study's LEAKY one)",
        description="Run a named grid of experiments (rows: baseline, tuned, +ROS, +SMOTE, +SMOTE-Tomek, "
        "+augmentation x3, +auxiliary data x3) and write results.md / results.json. "
        "Finished cells are never recomputed: rerun the same command to continue.",
    )
    cmds = p.add_subparsers(dest="experiment_command", metavar="ACTION")
    r = cmds.add_parser(
        "run", help="run (or continue) a grid", description="Run the unfinished cells of a grid."
    )
    r.add_argument("grid", metavar="NAME", help="a shipped grid name (e.g. study) or a grid YAML file")
    r.add_argument("--data", required=True, help="FER2013 (CSV or folders) with its official splits")
    r.add_argument("--aux", help="auxiliary training data (AffectNet class folders) for the +auxiliary rows")
    r.add_argument(
        "--budget", default="cpu", help="cpu (compact VGG, few epochs) or full (published configs)"
    )
    r.add_argument("--out", required=True, help="results folder (one per grid x budget x data)")
    r.add_argument(
        "--only", nargs="+", metavar="ROW", help="run only these rows (and the rows they fine-tune)"
    )
    r.add_argument("--seed", type=int, default=0)
    r.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        dest="overrides",
        help="training-config overrides for every cell, e.g. max_train_images=2000 epochs=1",
    )
    r.add_argument(
        "--tta",
        choices=TTA_MODES,
        help="test-time crops for every evaluation (default: the grid's, ten_crop)",
    )
    r.set_defaults(func=run)
    t = cmds.add_parser("table", help="print (and rewrite) the results table of a results folder")
    t.add_argument("out", metavar="DIR")
    t.add_argument("--json", action="store_true", help="print results.json instead of Markdown")
    t.set_defaults(func=table)
    lr = cmds.add_parser(
        "leakage-report",
        help="write the study-converged run's side-by-side table and curves into docs",
        description="Rewrite the generated blocks of DOCS/LEAKAGE.md and DOCS/RESULTS.md and draw "
        "DOCS/leakage_curves.png from a study-converged results folder (finished or still running).",
    )
    lr.add_argument("out", metavar="DIR", help="the results folder of `experiment run study-converged`")
    lr.add_argument("--docs", default="docs", help="the docs folder to write into (default: docs)")
    lr.add_argument(
        "--command",
        default="bash scripts/study_converged.sh",
        help="the command to name as the figures' source in the page",
    )
    lr.set_defaults(func=leakage_report)
    ls = cmds.add_parser("list", help="list the shipped grids and their rows")
    ls.add_argument("grid", nargs="?", metavar="NAME")
    ls.set_defaults(func=list_)
    p.set_defaults(func=lambda args: p.print_help() or 2)


def run(args: argparse.Namespace) -> int:
    from ferkit.experiments.runner import run_grid
    from ferkit.experiments.table import render_markdown

    log_to_console()  # the grid's progress and every run's per-epoch lines
    table = run_grid(
        args.grid,
        args.data,
        args.out,
        budget=args.budget,
        aux=args.aux,
        only=args.only,
        seed=args.seed,
        overrides=args.overrides,
        tta=args.tta,
    )
    print(render_markdown(table))
    return 0


def table(args: argparse.Namespace) -> int:

    from ferkit.experiments.table import render_markdown, write_table

    if not (Path(args.out) / "run.json").is_file():
        raise ConfigError(f"{args.out} is not an experiment results folder (no run.json)")
    t = write_table(args.out)
    print(json.dumps(t, indent=1) if args.json else render_markdown(t))
    return 0


def leakage_report(args: argparse.Namespace) -> int:
    from ferkit.experiments.leakage_report import render_table, write_report

    report = write_report(args.out, args.docs, args.command)
    print(render_table(report))
    print(f"\nwritten: {Path(args.docs) / 'LEAKAGE.md'}, {Path(args.docs) / 'leakage_curves.png'}")
    return 0


def list_(args: argparse.Namespace) -> int:
    from ferkit.experiments.grid import list_grids, load_grid

    for name in [args.grid] if args.grid else list_grids():
        g = load_grid(name)
        print(f"{g.name}: {g.description}")
        for b, budget in g.budgets.items():
            print(f"  budget {b}: {budget.note}")
        for row in g.rows:
            if row.ensemble:
                extra = [f"mean of the softmax of {', '.join(row.ensemble)}"]
            else:
                extra = [f"fine-tunes {row.finetune}" if row.finetune else f"recipe {row.config}"]
            if row.study:
                extra.append("also under the study protocol (LEAKY)")
            if row.aux:
                extra.append("needs --aux")
            print(f"  {row.id:<20} {row.name}  ({'; '.join(extra)})")
    return 0
