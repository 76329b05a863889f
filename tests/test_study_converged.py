"""The study-converged grid: every epoch records leaky and official accuracy, ensemble rows average their
members under each protocol, and the leakage report puts the study's figures beside both protocols."""

from __future__ import annotations

import json

import pytest
from conftest import imbalanced_csv

from ferkit.cli import main
from ferkit.errors import ConfigError
from ferkit.experiments import load_grid, run_grid
from ferkit.experiments.leakage_report import implied_seen_accuracy

TINY = ["model=vgg_fer_w16", "epochs=2", "batch_size=16", "progress=false", "threads=1"]


def test_grid_rows_and_budget():
    g = load_grid("study-converged")
    assert [r.id for r in g.rows] == ["tuned", "ros", "smote", "smote_tomek", "ensemble", "ros_noaug"]
    assert g.monitor and g.row("ensemble").ensemble == ["ros", "smote", "smote_tomek"]
    assert [r.id for r in g.with_dependencies(["ensemble"])] == [r.id for r in g.rows][:5]
    probe = g.cell_config(g.row("ros_noaug"), "study", "cpu", data="d", out="o", finetune_from="t/best.pt")
    assert probe.balance == "ros" and not probe.augment.enabled  # +ROS without per-batch augmentation
    cfg = g.cell_config(g.row("ros"), "study", "cpu", data="d", out="o", finetune_from="t/best.pt")
    assert (cfg.model, cfg.epochs, cfg.early_stopping, cfg.optimizer, cfg.lr) == (
        "vgg_fer_w16",
        10,
        10,
        "adam",
        1e-4,
    )


def test_ensemble_row_needs_its_members_first(tmp_path):
    bad = tmp_path / "g.yaml"
    bad.write_text(
        "rows:\n  - {id: ens, name: e, ensemble: [a]}\n  - {id: a, name: a, config: tuned}\nbudgets: {}\n"
    )
    with pytest.raises(ConfigError, match="needs member 'a' among the rows before it"):
        load_grid(bad)


def test_implied_copy_accuracy():
    # 66% copies, 60% on the rest: 86% leaky needs 99.4% on the copies; 99% leaky needs more than 100%.
    assert implied_seen_accuracy(0.86, 0.66, 0.60) == pytest.approx(0.9939, abs=1e-4)
    assert implied_seen_accuracy(0.99, 0.5, 0.6) is None
    assert implied_seen_accuracy(0.9, 0.0, 0.6) is None


@pytest.mark.slow
def test_tiny_study_converged_run_and_report(tmp_path, capsys):
    csv = imbalanced_csv(tmp_path / "fer.csv")
    out, docs = tmp_path / "results", tmp_path / "docs"
    table = run_grid("study-converged", csv, out, budget="cpu", only=["ros"], overrides=TINY, log=print)
    assert [r["id"] for r in table["rows"]] == ["tuned", "ros"]

    # Every epoch of every cell carries the watch sets' accuracies; ROS copies make "seen" test images.
    for cell in ("tuned/official", "ros/official", "ros/study"):
        epochs = [json.loads(line) for line in (out / cell / "metrics.jsonl").read_text().splitlines()]
        assert len(epochs) == 2
        for e in epochs:
            assert {"leaky_acc", "private_acc", "train_eval_acc"} <= e.keys()
            assert all(0 <= e[k] <= 1 for k in ("leaky_acc", "private_acc", "train_eval_acc"))
    watch = json.loads((out / "ros" / "study" / "monitor.json").read_text())
    assert 0 < watch["leaky"]["seen"] < watch["leaky"]["images"]
    assert watch["train_eval"]["seen"] == watch["train_eval"]["images"]  # a sample of its own training data
    official = json.loads((out / "ros" / "official" / "monitor.json").read_text())
    assert official["private"]["seen"] == 0  # the official protocol never trains on PrivateTest

    # The ensemble averages the members of its own protocol; the study one pools their leaky test parts
    # (rebuilt from the cell's config where the saved part is missing, as on a fresh checkout).
    (out / "ros" / "study" / "study_parts.npz").unlink()
    run_grid("study-converged", csv, out, budget="cpu", only=["ensemble"], overrides=TINY, log=print)
    study = json.loads((out / "ensemble" / "study" / "metrics.json").read_text())
    official_ens = json.loads((out / "ensemble" / "official" / "metrics.json").read_text())
    assert study["label"] == "LEAKY" and official_ens["evaluated_on"] == "PrivateTest"
    parts = sum(
        json.loads((out / m / "study" / "metrics.json").read_text())["metrics"]["n"]
        for m in ("ros", "smote", "smote_tomek")
    )
    assert study["metrics"]["n"] == parts and study["leakage"]["exact"] > 0
    # Under SMOTE the images a study model trained on include SMOTE parents and children of test images.
    prov = json.loads((out / "smote" / "study" / "leakage.json").read_text())["provenance"]
    watch = json.loads((out / "smote" / "study" / "monitor.json").read_text())
    assert prov["smote_neighbour"] > 0 and watch["leaky"]["seen"] == prov["exact_or_smote"]

    capsys.readouterr()
    assert main(["experiment", "leakage-report", str(out), "--docs", str(docs), "--command", "CMD"]) == 0
    page = (docs / "LEAKAGE.md").read_text()
    assert "| +ROS | 85.97 / 92.71 / 96.49 |" in page and "3-model ensemble" in page
    assert "| +ROS, no per-batch augmentation (probe) | 85.97 / 92.71 / 96.49 | — |" in page  # not run
    assert "Produced by `CMD`" in page and (docs / "leakage_curves.png").stat().st_size > 10_000
    assert "<!-- generated:study-converged -->" in (docs / "RESULTS.md").read_text()
    # A second report replaces its block instead of adding another.
    assert main(["experiment", "leakage-report", str(out), "--docs", str(docs), "--command", "CMD"]) == 0
    assert (docs / "LEAKAGE.md").read_text().count("generated:study-converged -->") == 2
