"""Helpers shared by the training tests (to be folded into conftest.py): tiny data, a tiny config, the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import make_synthetic

from ferkit.config import AugmentConfig, TrainConfig
from ferkit.training.data import TrainingData


def tiny_data() -> TrainingData:
    """About 200 training and 42 validation images of synthetic faces."""
    x, y = make_synthetic(28, seed=0)
    xv, yv = make_synthetic(6, seed=1)
    return TrainingData(x, y, xv, yv)


def tiny_cfg(out: Path, **kw) -> TrainConfig:
    """A config that trains the smallest model for 2 quick epochs into ``out``; ``kw`` overrides fields."""
    base = {
        "model": "vgg_fer_w16",
        "epochs": 2,
        "batch_size": 32,
        "lr": 0.01,
        "out": str(out),
        "progress": False,
        "seed": 3,
        "augment": AugmentConfig(translate=0.05, erasing=0.1),
    }
    base.update(kw)
    return TrainConfig(**base)


def run_cli(*args: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    """``python -m ferkit.cli ARGS`` in ``cwd`` with one thread and a private cache; output captured."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FERKIT_CACHE_DIR": str(cwd / "cache")}
    return subprocess.run(
        [sys.executable, "-m", "ferkit.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
