"""Make a training run that must continue in a later session small enough to commit (issue 12: "commit
the last checkpoint of a run that must continue, as fp16 weights plus the optimizer state").

Rewrites RUN/last.pt in place (atomically) with float16 weights and optimizer state
(``ferkit.training.checkpoint.compact_training_state``) and deletes RUN/last.prev.pt; `ferkit train
--resume -o RUN` then continues as before, from weights rounded to float16. Commit RUN's last.pt,
config.yaml, data.json and metrics.jsonl; remove them from git when the run is done.

    python scripts/compact_run.py runs/scratch-w32
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ferkit.errors import FerkitError
from ferkit.models.checkpoint import load_checkpoint, save_torch
from ferkit.training.checkpoint import compact_training_state, previous_path
from ferkit.training.loop import check_resumable


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", type=Path, help="a training run's folder (holds last.pt)")
    args = ap.parse_args(argv)
    last = args.run / "last.pt"
    try:
        ckpt = load_checkpoint(last)
        check_resumable(ckpt, last)
    except FerkitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    before = last.stat().st_size
    save_torch(compact_training_state(ckpt), last)
    previous_path(last).unlink(missing_ok=True)
    print(f"{last}: epoch {ckpt['epoch']}, {before / 1e6:.1f} MB -> {last.stat().st_size / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
