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
from ferkit.errors import ConfigError, DataError
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
    table = run_grid("study", csv, out, budget="cpu", only=["ros"], overrides=TINY, log=logs.append)
    assert "also running tuned" in "\n".join(logs)
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


def _run(*args: str) -> list[str]:
    return ["experiment", "run", "study", "--budget", "cpu", *args]


def test_refused_run_leaves_its_folder_free_for_the_corrected_one(tmp_path, capsys):
    csv, out = imbalanced_csv(tmp_path / "fer.csv"), tmp_path / "ex"
    refused = [
        (["--data", str(tmp_path / "nosuch"), "--only", "baseline"], 3, "data not found"),
        (["--data", str(csv), "--only", "nosuch"], 2, "no row 'nosuch'"),
        (["--data", str(csv), "--only", "baseline", "--set", "lr=abc"], 2, "lr: expected a number"),
        (["--data", str(csv), "--only", "baseline", "--set", "model=nosuch"], 4, "unknown model 'nosuch'"),
    ]
    for args, code, message in refused:
        capsys.readouterr()
        assert main(_run(*args, "--out", str(out))) == code
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1 and "Traceback" not in err
        assert not (out / "run.json").exists()


def test_a_run_json_that_left_no_results_does_not_block_another_run(tmp_path):
    csv, out = imbalanced_csv(tmp_path / "fer.csv"), tmp_path / "ex"
    out.mkdir()
    stale = {"grid": "study", "budget": "cpu", "data": "nosuch", "aux": None, "seed": 0, "overrides": []}
    (out / "run.json").write_text(json.dumps(stale))  # as a refused run of an older ferkit left it
    logs: list[str] = []
    table = run_grid("study", csv, out, only=["baseline"], overrides=TINY, log=logs.append)
    assert [r["id"] for r in table["rows"]] == ["baseline"]
    assert json.loads((out / "run.json").read_text())["data"] == str(csv)
    with pytest.raises(
        ConfigError, match="different run"
    ):  # now it holds results: a different run is refused
        run_grid("study", tmp_path / "other.csv", out, only=["baseline"], overrides=TINY, log=logs.append)


def _finished_folder(out, cell_text):
    """A results folder whose one finished cell's metrics.json holds ``cell_text``."""
    cell = out / "baseline" / "official"
    cell.mkdir(parents=True)
    spec = {"grid": "study", "budget": "cpu", "data": "fer.csv", "aux": None, "seed": 0, "overrides": []}
    (out / "run.json").write_text(json.dumps({**spec, "tta": "center"}))
    (cell / "metrics.json").write_text(cell_text)
    return cell / "metrics.json"


@pytest.mark.parametrize("damaged", ["", '{"row": "baseline", ', "[1, 2]", '{"row": "baseline"}'])
def test_damaged_metrics_json_is_a_data_error_naming_the_file(tmp_path, capsys, damaged):
    out = tmp_path / "ex"
    metrics = _finished_folder(out, damaged)
    capsys.readouterr()
    assert main(["experiment", "table", str(out)]) == 3
    assert str(metrics) in capsys.readouterr().err
    csv = imbalanced_csv(tmp_path / "fer.csv")
    with pytest.raises(DataError, match="metrics.json.*delete it to rerun the cell"):
        run_grid("study", csv, out, only=["baseline"], overrides=TINY, log=lambda _: None)
    assert not (metrics.parent / "best.pt").exists()  # refused before anything trained
    (out / "tuned" / "official").mkdir(parents=True)
    (out / "tuned" / "official" / "metrics.json").write_text(damaged)
    assert main(["experiment", "leakage-report", str(out), "--docs", str(tmp_path / "docs")]) == 3
    assert "tuned/official/metrics.json" in capsys.readouterr().err


@pytest.mark.parametrize("damaged", ["", "{", "null"])
def test_damaged_run_json_is_a_data_error_naming_the_file(tmp_path, capsys, damaged):
    out = tmp_path / "ex"
    cell = {"row": "baseline", "name": "baseline", "protocol": "official", "label": "official"}
    _finished_folder(out, json.dumps({**cell, "evaluated_on": "PrivateTest", "metrics": {"top1": 0.5}}))
    (out / "run.json").write_text(damaged)
    csv = imbalanced_csv(tmp_path / "fer.csv")
    for argv in (
        ["experiment", "table", str(out)],
        ["experiment", "leakage-report", str(out), "--docs", str(tmp_path / "docs")],
        _run("--data", str(csv), "--out", str(out), "--only", "baseline", "--set", *TINY),
    ):
        capsys.readouterr()
        assert main(argv) == 3
        err = capsys.readouterr().err
        assert f"{out / 'run.json'}: " in err and err.count("\n") == 1
    assert not (out / "baseline" / "official" / "best.pt").exists()


def test_a_row_needing_aux_data_asked_for_without_aux_is_refused_before_training(tmp_path, capsys):
    csv, out = imbalanced_csv(tmp_path / "fer.csv"), tmp_path / "ex"
    for only in (["aux_25"], ["ros", "aux_50"]):
        with pytest.raises(ConfigError, match=r"needs auxiliary data: pass --aux PATH"):
            run_grid("study", csv, out, only=only, overrides=TINY, log=lambda _: None)
    with pytest.raises(ConfigError, match="aux_25, aux_90 need auxiliary data"):
        run_grid("study", csv, out, only=["aux_25", "aux_90"], overrides=TINY, log=lambda _: None)
    capsys.readouterr()
    assert main(_run("--data", str(csv), "--out", str(out), "--only", "aux_25")) == 2
    assert "aux_25 needs auxiliary data" in capsys.readouterr().err
    assert not out.exists()  # the parent row `tuned` did not train, and no run.json locks the folder
    assert main(_run("--data", str(csv), "--out", str(out), "--only", "aux_25", "--aux", "nosuch")) == 3
    assert "auxiliary data not found: nosuch" in capsys.readouterr().err
