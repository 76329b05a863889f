"""Training loop: loss goes down, checkpoints are complete and safe, resume is exact, DDP runs on CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import free_port, make_synthetic, run_cli, tiny_cfg, tiny_data, write_fer_csv

from ferkit.config import TrainConfig
from ferkit.data.dataset import FaceDataset
from ferkit.errors import ConfigError
from ferkit.models.checkpoint import load_checkpoint, model_from_checkpoint
from ferkit.training.data import TrainingData, inverse_frequency, prepare_training_data
from ferkit.training.loop import best_epoch, fit


def test_two_epochs_lower_the_loss_and_write_checkpoints(tmp_path):
    summary = fit(tiny_cfg(tmp_path / "run", epochs=4), data=tiny_data())
    h = summary["history"]
    assert len(h) == 4 and h[-1]["train_loss"] < h[0]["train_loss"]
    for name in ("best.pt", "last.pt", "metrics.jsonl", "config.yaml", "curves.png"):
        assert (tmp_path / "run" / name).is_file(), name
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3, 4]
    # The checkpoint alone is enough to predict: it carries model name, classes and normalisation.
    ck = load_checkpoint(tmp_path / "run" / "best.pt")
    assert ck["meta"]["classes"][3] == "Happy" and 0 < ck["meta"]["std"] < 1
    model, meta = model_from_checkpoint(ck)
    assert meta.name == "vgg_fer_w16"
    with torch.no_grad():
        assert model(torch.zeros(2, 1, 40, 40)).shape == (2, 7)


def test_resume_reproduces_an_uninterrupted_run_exactly(tmp_path):
    data = tiny_data()
    full = fit(tiny_cfg(tmp_path / "full", epochs=3), data=data)
    fit(tiny_cfg(tmp_path / "cut", epochs=1), data=data)  # "killed" after epoch 1
    resumed = fit(tiny_cfg(tmp_path / "cut", epochs=3), data=data, resume=True)
    assert resumed["epochs_run"] == 3
    a = load_checkpoint(tmp_path / "full" / "last.pt")
    b = load_checkpoint(tmp_path / "cut" / "last.pt")
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=0, atol=1e-6)
    assert [h["val_acc"] for h in full["history"]] == [h["val_acc"] for h in resumed["history"]]


def test_a_compacted_run_resumes_from_half_the_bytes(tmp_path):
    """scripts/compact_run.py: last.pt in float16 (to commit a run that continues in a later session)."""
    data = tiny_data()
    fit(tiny_cfg(tmp_path / "full", epochs=3), data=data)
    fit(tiny_cfg(tmp_path / "cut", epochs=2), data=data)
    last = tmp_path / "cut" / "last.pt"
    before = last.stat().st_size
    script = Path(__file__).resolve().parents[1] / "scripts" / "compact_run.py"

    def compact(run):
        cmd = [sys.executable, str(script), str(run)]
        return subprocess.run(cmd, capture_output=True, text=True, check=False)

    done = compact(tmp_path / "cut")
    assert done.returncode == 0, done.stderr
    assert last.stat().st_size < 0.6 * before and not (tmp_path / "cut" / "last.prev.pt").exists()
    ck = load_checkpoint(last)  # the checksum was recomputed: it loads
    assert ck["model"]["classifier.1.weight"].dtype == torch.float16
    resumed = fit(tiny_cfg(tmp_path / "cut", epochs=3), data=data, resume=True)
    assert resumed["epochs_run"] == 3
    a, b = load_checkpoint(tmp_path / "full" / "last.pt"), load_checkpoint(last)
    assert b["model"]["classifier.1.weight"].dtype == torch.float32  # the run went on in float32
    # Conv and linear weights within 5% of the uninterrupted run's (float16 rounding carried through one more
    # epoch: ~1%); another seed's run is ~145% away. (Biases before a BatchNorm barely matter and drift more.)
    rel = max(
        float((v - b["model"][k]).norm() / v.norm())
        for k, v in a["model"].items()
        if k.endswith("weight") and v.dim() > 1
    )
    assert rel < 0.05
    # Not a training state: one line, exit 1.
    fit(tiny_cfg(tmp_path / "done", epochs=1), data=data)
    (tmp_path / "done" / "last.pt").write_bytes((tmp_path / "done" / "best.pt").read_bytes())
    bad = compact(tmp_path / "done")
    assert bad.returncode == 1 and "not a training state" in bad.stderr and "Traceback" not in bad.stderr


def test_refuses_to_overwrite_a_run_and_to_resume_nothing(tmp_path):
    fit(tiny_cfg(tmp_path / "run", epochs=1), data=tiny_data())
    with pytest.raises(ConfigError, match="--resume"):
        fit(tiny_cfg(tmp_path / "run", epochs=1), data=tiny_data())
    with pytest.raises(ConfigError, match="nothing to resume"):
        fit(tiny_cfg(tmp_path / "none", epochs=1), data=tiny_data(), resume=True)


def test_resume_refuses_changed_settings_but_accepts_more_epochs(tmp_path):
    fit(tiny_cfg(tmp_path / "run", epochs=1), data=tiny_data())
    with pytest.raises(ConfigError, match="lr"):
        fit(tiny_cfg(tmp_path / "run", epochs=2, lr=0.5), data=tiny_data(), resume=True)
    s = fit(tiny_cfg(tmp_path / "run", epochs=2), data=tiny_data(), resume=True)
    assert s["epochs_run"] == 2 and s["epochs_this_run"] == 1


@pytest.mark.parametrize("override", [{"val_split": "PrivateTest"}, {"train_split": "PrivateTest"}])
def test_privatetest_is_never_used_for_training_or_selection(override):
    x, y = make_synthetic(2)
    ds = FaceDataset(
        np.concatenate([x, x, x]),
        np.concatenate([y, y, y]),
        np.array(["Training"] * len(y) + ["PublicTest"] * len(y) + ["PrivateTest"] * len(y), dtype=object),
    )
    with pytest.raises(ConfigError, match="PrivateTest"):
        prepare_training_data(TrainConfig(**override), ds)


def test_checkpoint_loads_with_weights_only(tmp_path):
    fit(tiny_cfg(tmp_path / "run", epochs=1), data=tiny_data())
    ck = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert {"optimizer", "scheduler", "rng", "epoch", "config", "history"} <= set(ck)


def test_early_stopping_stops(tmp_path):
    # lr 0 -> validation never improves after epoch 1 -> stops after `early_stopping` more epochs.
    s = fit(
        tiny_cfg(tmp_path / "run", epochs=20, lr=0.0, early_stopping=2, scheduler="none"), data=tiny_data()
    )
    assert s["stopped_early"] and s["epochs_run"] == 3
    # Equal validation accuracy every epoch: the first epoch stays the best (best.pt), as best_epoch says.
    assert load_checkpoint(tmp_path / "run" / "best.pt")["epoch"] == best_epoch(s["history"])["epoch"] == 1


def test_best_epoch_is_the_first_maximum_of_the_selection_accuracy():
    h = [{"epoch": e, "val_acc": a} for e, a in [(1, 0.5), (2, 0.6), (3, 0.6), (4, 0.55)]]
    assert best_epoch(h)["epoch"] == 2 and best_epoch([]) is None  # a tie keeps the earlier epoch
    aux = [{**r, "select_acc": s} for r, s in zip(h, [0.3, 0.2, 0.1, 0.4])]
    assert best_epoch(aux)["epoch"] == 4  # select_acc, where the records have it, decides


@pytest.mark.parametrize("balance", ["class_weight", "sampler"])
def test_balancing_without_synthetic_images(tmp_path, balance):
    x, y = make_synthetic(counts=[30, 4, 30, 60, 30, 30, 30], seed=0)
    xv, yv = make_synthetic(5, seed=1)
    w = inverse_frequency(y)
    assert w[1] > w[3] and w.argmax() == 1
    data = TrainingData(
        x,
        y,
        xv,
        yv,
        class_weights=w if balance == "class_weight" else None,
        sample_weights=w[y].astype(np.float64) if balance == "sampler" else None,
    )
    s = fit(tiny_cfg(tmp_path / "run", epochs=1), data=data)
    assert s["epochs_run"] == 1


@pytest.mark.slow
def test_cli_train_then_resume_from_csv(tmp_path):
    csv = write_fer_csv(tmp_path / "fer.csv", n_per_class=8)
    out = tmp_path / "run #1"  # paths are taken as they are, not parsed as YAML
    args = [
        "train",
        "--data",
        str(csv),
        "--out",
        str(out),
        "model=vgg_fer_w16",
        "batch_size=16",
        "progress=false",
    ]
    r = run_cli(*args, "epochs=1", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (out / "last.pt").is_file()
    # --resume alone continues with the run's saved config; only the epoch count changes here
    r = run_cli("train", "--out", str(out), "--resume", "epochs=2", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "epoch 2:" in r.stdout and "epoch 1:" not in r.stdout and "1 epochs this run" in r.stdout
    r = run_cli("train", "lr=fast", cwd=tmp_path)
    assert r.returncode == 2 and "lr: expected a number" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("train", "nosuchfield=1", cwd=tmp_path)
    assert r.returncode == 2 and "unknown config field" in r.stderr
    r = run_cli("train", "lr=[1,", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1  # one line, even for YAML errors


@pytest.mark.slow
def test_ddp_two_processes_on_cpu(tmp_path):
    csv = write_fer_csv(tmp_path / "fer.csv", n_per_class=8)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FERKIT_CACHE_DIR": str(tmp_path / "cache")}
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            f"--master_port={free_port()}",
            "-m",
            "ferkit.cli",
            "train",
            "--data",
            str(csv),
            "--out",
            str(tmp_path / "ddp"),
            "model=vgg_fer_w16",
            "batch_size=8",
            "epochs=2",
            "progress=false",
            "device=cpu",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count("epoch 2:") == 1 and r.stdout.count("done:") == 1  # only rank 0 logs
    ck = load_checkpoint(tmp_path / "ddp" / "last.pt")
    assert ck["epoch"] == 2
    assert not any(k.startswith("module.") for k in ck["model"])  # saved unwrapped


@pytest.mark.slow
def test_sigkill_mid_run_then_resume(tmp_path):
    """A run killed with SIGKILL after an epoch's checkpoint resumes from it and finishes."""
    import signal
    import time

    csv = write_fer_csv(tmp_path / "fer.csv", n_per_class=8)
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FERKIT_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ferkit.cli",
            "train",
            "--data",
            str(csv),
            "--out",
            str(out),
            "model=vgg_fer_w16",
            "batch_size=8",
            "epochs=50",
            "progress=false",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.time() + 120
    while not (out / "last.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    done = load_checkpoint(out / "last.pt")["epoch"]  # intact: written atomically
    assert 1 <= done < 50
    r = run_cli("train", "--out", str(out), "--resume", "epochs=" + str(done + 1), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert f"epoch {done + 1}:" in r.stdout and load_checkpoint(out / "last.pt")["epoch"] == done + 1


def test_skip_bad_trains_past_a_corrupt_image_and_counts_it(tmp_path, capsys):
    from conftest import write_fer_folders

    from ferkit.cli import main

    root = write_fer_folders(tmp_path / "faces", n_per_class=4)
    (root / "train" / "happy" / "Training_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    args = ["train", "--data", str(root), "model=vgg_fer_w16", "batch_size=16", "epochs=1", "progress=false"]
    assert main([*args, "--out", str(tmp_path / "strict")]) == 3  # DataError, naming the way out
    assert "--skip-bad" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "run"), "--skip-bad"]) == 0
    out = capsys.readouterr().out
    assert "skipped 1 file" in out and "epoch 1:" in out
    notes = json.loads((tmp_path / "run" / "data.json").read_text())
    assert sum(notes["skipped"].values()) == 1
    assert load_checkpoint(tmp_path / "run" / "last.pt")["config"]["skip_bad"] is True
