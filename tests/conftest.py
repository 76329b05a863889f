"""Shared fixtures and helpers: small synthetic FER-like data (no ../shared, no network needed)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

# What the CLI sets before torch loads (ferkit.cli.main): OpenMP threads that spin while waiting make
# PyTorch many times slower on shared cores (the suite took 481 s with spinning, 175 s without).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import pytest

from ferkit.config import AugmentConfig, TrainConfig
from ferkit.training.data import TrainingData


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Keep the tests' dataset cache out of the user's ~/.cache (subprocesses inherit it)."""
    if "FERKIT_CACHE_DIR" not in os.environ:
        os.environ["FERKIT_CACHE_DIR"] = str(tmp_path_factory.mktemp("ferkit-cache"))
    yield


SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FOLDER_NAMES = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]


def make_synthetic(n_per_class: int = 20, seed: int = 0, counts: list[int] | None = None):
    """Learnable 48x48 uint8 'faces': class k is a stripe pattern of its own frequency and angle."""
    rng = np.random.default_rng(seed)
    counts = counts or [n_per_class] * 7
    yy, xx = np.mgrid[0:48, 0:48].astype(np.float32)
    images, labels = [], []
    for k, n in enumerate(counts):
        angle = k * np.pi / 7
        freq = 0.15 + 0.05 * k
        base = np.sin(freq * (np.cos(angle) * xx + np.sin(angle) * yy))
        for _ in range(n):
            img = 128 + 80 * base + rng.normal(0, 20, (48, 48))
            images.append(np.clip(img, 0, 255).astype(np.uint8))
            labels.append(k)
    return np.stack(images), np.array(labels, dtype=np.int64)


def write_fer_csv(path: Path, n_per_class: int = 6, seed: int = 0) -> Path:
    """A fer2013.csv with all three Usage values."""
    usages = ["Training", "PublicTest", "PrivateTest"]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["emotion", "pixels", "Usage"])
        for u_i, usage in enumerate(usages):
            imgs, labels = make_synthetic(n_per_class, seed=seed + u_i)
            for img, y in zip(imgs, labels):
                w.writerow([int(y), " ".join(map(str, img.reshape(-1).tolist())), usage])
    return path


def imbalanced_csv(path):
    """A FER2013-style CSV whose Training split is imbalanced (so that resampling copies images)."""
    rows = ["emotion,pixels,Usage"]
    for usage, counts, seed in [
        ("Training", [12, 3, 12, 24, 12, 12, 12], 0),
        ("PublicTest", [3] * 7, 1),
        ("PrivateTest", [3] * 7, 2),
    ]:
        x, y = make_synthetic(counts=counts, seed=seed)
        rows += [f"{label},{' '.join(map(str, img.reshape(-1)))},{usage}" for img, label in zip(x, y)]
    path.write_text("\n".join(rows) + "\n")
    return path


def write_fer_folders(root: Path, n_per_class: int = 6, seed: int = 0, ext: str = "png") -> Path:
    """train/<class>/Training_<id>.<ext> and test/<class>/{PublicTest,PrivateTest}_<id>.<ext>

    The same images as ``write_fer_csv``."""
    import cv2

    i = 0
    for u_i, (usage, top) in enumerate(
        [("Training", "train"), ("PublicTest", "test"), ("PrivateTest", "test")]
    ):
        imgs, labels = make_synthetic(n_per_class, seed=seed + u_i)  # the same images as write_fer_csv
        for img, y in zip(imgs, labels):
            d = root / top / FOLDER_NAMES[y]
            d.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(d / f"{usage}_{i}.{ext}"), img)
            i += 1
    return root


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models run as fast on one thread, and OpenMP threads crawl on a busy shared CPU."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def synthetic():
    return make_synthetic


@pytest.fixture
def fer_csv(tmp_path):
    return write_fer_csv(tmp_path / "fer2013.csv")


@pytest.fixture
def fer_folders(tmp_path):
    return write_fer_folders(tmp_path / "fer2013")


@pytest.fixture
def shared_data():
    """../shared/data when present; the test is skipped otherwise."""
    if not (SHARED / "fer2013").is_dir():
        pytest.skip("../shared/data is not available")
    return SHARED


# --- training: tiny data, a tiny config, the CLI in a subprocess ---------------------------------------


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
