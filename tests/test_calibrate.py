"""ferkit calibrate: temperature fitted on PublicTest, stored in the checkpoint, accuracy unchanged."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ferkit.cli import main
from ferkit.evaluation.predict import load_scorer
from ferkit.models import ModelMeta, create_model
from ferkit.training.checkpoint import atomic_save, load_checkpoint, make_checkpoint


@pytest.fixture
def overconfident_ckpt(tmp_path):
    torch.manual_seed(0)
    model = create_model("vgg_fer_w16")
    with torch.no_grad():  # huge logits -> over-confident -> T > 1
        model.classifier[-1].weight.mul_(50)
    path = tmp_path / "m.pt"
    atomic_save(make_checkpoint(model, ModelMeta(name="vgg_fer_w16")), path)
    return path


def test_calibrate_stores_temperature_and_keeps_ranking(tmp_path, fer_csv, overconfident_ckpt, capsys):
    out = tmp_path / "cal.pt"
    assert main(["calibrate", str(overconfident_ckpt), "--data", str(fer_csv), "-o", str(out)]) == 0
    assert "ECE" in capsys.readouterr().out
    ck = load_checkpoint(out)
    t = ck["meta"]["temperature"]
    assert t > 1.5 and ck["calibration"]["split"] == "PublicTest"
    assert ck["calibration"]["nll_after"] <= ck["calibration"]["nll_before"]
    images = np.random.default_rng(0).integers(0, 256, (16, 48, 48), dtype=np.uint8)
    p0 = load_scorer(overconfident_ckpt).predict_proba(images)
    p1 = load_scorer(out).predict_proba(images)
    assert (p0.argmax(1) == p1.argmax(1)).all() and p1.max(1).mean() < p0.max(1).mean()


def test_calibrate_refuses_privatetest(tmp_path, fer_csv, overconfident_ckpt, capsys):
    rc = main(["calibrate", str(overconfident_ckpt), "--data", str(fer_csv), "-o", str(tmp_path / "x.pt"),
               "--split", "PrivateTest"])
    assert rc != 0 and "PrivateTest" in capsys.readouterr().err and not (tmp_path / "x.pt").exists()
