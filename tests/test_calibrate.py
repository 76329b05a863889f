"""ferkit calibrate: temperature fitted on PublicTest, stored in the checkpoint, accuracy unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ferkit.cli import main
from ferkit.evaluation.scorers import load_scorer
from ferkit.models import ModelMeta, create_model
from ferkit.models.checkpoint import load_checkpoint, save_torch
from ferkit.training.checkpoint import make_checkpoint


@pytest.fixture
def overconfident_ckpt(tmp_path):
    torch.manual_seed(0)
    model = create_model("vgg_fer_w16")
    with torch.no_grad():  # huge logits -> over-confident -> T > 1
        model.classifier[-1].weight.mul_(50)
    path = tmp_path / "m.pt"
    save_torch(make_checkpoint(model, ModelMeta(name="vgg_fer_w16")), path)
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
    rc = main(
        [
            "calibrate",
            str(overconfident_ckpt),
            "--data",
            str(fer_csv),
            "-o",
            str(tmp_path / "x.pt"),
            "--split",
            "PrivateTest",
        ]
    )
    assert rc != 0 and "PrivateTest" in capsys.readouterr().err and not (tmp_path / "x.pt").exists()


def test_prior_correction_recovers_rare_classes():
    from ferkit.evaluation.calibrate import prior_correction

    rng = np.random.default_rng(0)
    prior = np.array([0.3, 0.02, 0.1, 0.3, 0.1, 0.08, 0.1])
    labels = rng.choice(7, size=4000, p=prior)
    # a model whose logits carry the training prior on top of a weak signal: rare classes under-predicted
    logits = rng.normal(0, 1, (4000, 7)) + np.log(prior) * 1.0
    logits[np.arange(4000), labels] += 1.5
    tau, bias = prior_correction(logits, labels, prior)
    assert tau > 0.3 and bias[1] == bias.max()  # Disgust-like rare class gets the largest offset
    pred0, pred1 = logits.argmax(1), (logits + bias).argmax(1)
    recall = lambda p: np.mean([(p[labels == c] == c).mean() for c in range(7)])
    assert recall(pred1) > recall(pred0)


def test_calibrated_checkpoint_with_offsets_exports_and_scores_alike(tmp_path, fer_csv, overconfident_ckpt):
    from ferkit.inference.export import export_onnx, probe_images

    out = tmp_path / "cal.pt"
    assert (
        main(
            [
                "calibrate",
                str(overconfident_ckpt),
                "--data",
                str(fer_csv),
                "-o",
                str(out),
                "--prior-correction",
            ]
        )
        == 0
    )
    ck = load_checkpoint(out)
    assert len(ck["meta"]["logit_bias"]) == 7
    images = probe_images(16)
    p_torch = load_scorer(out).predict_proba(images)
    onnx = export_onnx(out, tmp_path / "m.onnx", probes=images)  # parity check inside (1e-4)
    p_onnx = load_scorer(onnx.path).predict_proba(images)
    np.testing.assert_allclose(p_torch, p_onnx, atol=1e-4)
