"""Experiment runner: a tiny grid end to end, resume without recomputation, the table, auxiliary data."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from conftest import imbalanced_csv, write_fer_csv

from ferkit.cli import main
from ferkit.config import TrainConfig
from ferkit.data.load import load_dataset
from ferkit.errors import ConfigError
from ferkit.experiments import load_grid, run_grid
from ferkit.training.data import prepare_training_data

TINY = ["model=vgg_fer_w16", "epochs=1", "batch_size=16", "progress=false", "threads=1"]


def test_shipped_grid_has_the_study_rows():
    g = load_grid("study")
    assert [r.id for r in g.rows] == [
        "baseline",
        "tuned",
        "ros",
        "smote",
        "smote_tomek",
        "aug_flip",
        "aug_flip_rot",
        "aug_flip_rot_noise",
        "aux_25",
        "aux_50",
        "aux_90",
    ]
    assert {r.id for r in g.rows if r.study} == {"ros", "smote", "smote_tomek"}
    assert all(r.finetune == "tuned" for r in g.rows[2:])
    cfg = g.cell_config(g.row("smote"), "study", "cpu", data="d", out="o", finetune_from="t/best.pt")
    assert (cfg.model, cfg.balance, cfg.protocol, cfg.optimizer, cfg.epochs) == (
        "vgg_fer_w32",
        "smote",
        "study",
        "adam",
        1,
    )
    assert g.cell_config(g.row("baseline"), "official", "cpu", data="d", out="o").epochs == 5
    assert g.budget("cpu").evaluate == {"tta": "center"} and g.evaluate["tta"] == "ten_crop"
    full = g.cell_config(g.row("aug_flip_rot"), "official", "full", data="d", out="o")
    assert (full.model, full.augment.subset, full.augment.copies.rotation) == ("vgg_fer", "balanced", 15.0)
    assert full.augment.rotation == 10.0  # the loop's own augmentation keeps the tuned config's settings


@pytest.mark.slow
def test_tiny_grid_end_to_end_then_resume(tmp_path, capsys):
    csv = imbalanced_csv(tmp_path / "fer.csv")
    out = tmp_path / "results"
    logs: list[str] = []
    table = run_grid("study", csv, out, budget="cpu", only=["ros", "aux_25"], overrides=TINY, log=logs.append)
    text = "\n".join(logs)
    assert "also running tuned" in text and "aux_25: skipped (needs auxiliary data" in text
    assert [r["id"] for r in table["rows"]] == ["tuned", "ros"]
    ros = table["rows"][1]
    assert ros["official"]["label"] == "official" and ros["study"]["label"] == "LEAKY"
    assert ros["study"]["leakage"]["exact"] > 0  # ROS before the split: test images copied into training
    assert ros["official"]["leakage"]["exact"] == 0
    cell = json.loads((out / "ros" / "official" / "metrics.json").read_text())
    assert (
        cell["config"]["finetune_from"].endswith("tuned/official/best.pt")
        and cell["evaluated_on"] == "PrivateTest"
    )
    assert cell["tta"] == "center"  # the cpu budget's evaluation
    assert 0 <= cell["metrics"]["top1"] <= cell["metrics"]["top2"] <= cell["metrics"]["top3"] <= 1
    md = (out / "results.md").read_text()
    assert "| +ROS |" in md and "LEAKY top-1" in md and "| tuned (Adam 1e-4) |" in md
    stamp = {p: p.stat().st_mtime_ns for p in out.glob("*/*/best.pt")}
    assert len(stamp) == 3  # tuned, ros under both protocols

    logs.clear()
    again = run_grid("study", csv, out, budget="cpu", only=["ros"], overrides=TINY, log=logs.append)
    assert sum("finished earlier, not recomputed" in line for line in logs) == 3
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/*/best.pt")} == stamp
    assert [r["id"] for r in again["rows"]] == ["tuned", "ros"]
    with pytest.raises(ConfigError, match="different run"):
        run_grid("study", csv, out, budget="full", overrides=TINY, log=logs.append)

    capsys.readouterr()
    assert main(["experiment", "table", str(out)]) == 0
    assert "LEAKY" in capsys.readouterr().out


def test_auxiliary_affectnet_is_mixed_into_training_only(tmp_path):
    root = tmp_path / "affectnet"
    rng = np.random.default_rng(0)
    for name in ["anger", "contempt", "happy", "surprise"]:  # Kaggle AffectNet names, 96x96 colour
        (root / name).mkdir(parents=True)
        for i in range(6):
            cv2.imwrite(str(root / name / f"{i}.png"), rng.integers(0, 256, (96, 96, 3), dtype=np.uint8))
    ds = load_dataset(write_fer_csv(tmp_path / "fer.csv", n_per_class=4))
    n_train = int((ds.splits == "Training").sum())
    cfg = TrainConfig(aux_data=str(root), aux_ratio=0.5, seed=0, out=str(tmp_path / "run"))
    data = prepare_training_data(cfg, ds)
    assert data.notes["aux_images"] == 14 and len(data.train_labels) == n_train + 14  # 0.5 x 28
    assert data.train_images.shape[1:] == (48, 48) and data.train_images.dtype == np.uint8
    assert set(np.unique(data.train_labels[n_train:])) <= {0, 3, 5}  # contempt dropped
    assert np.array_equal(data.val_images, ds.split("PublicTest").images)  # validation stays FER2013's
