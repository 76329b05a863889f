"""Knowledge distillation: the loss, teacher targets (checkpoint and ensemble) and the loop's use of them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import tiny_cfg, tiny_data

from ferkit.config import AugmentConfig
from ferkit.errors import ConfigError
from ferkit.models.checkpoint import load_checkpoint, model_from_checkpoint, save_torch
from ferkit.models.ensemble import build_ensemble, save_ensemble
from ferkit.models.integrity import CHECKSUM_KEY, weights_checksum
from ferkit.training.data import TrainingData
from ferkit.training.distill import Teacher, distillation_loss
from ferkit.training.loop import fit


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    root = tmp_path_factory.mktemp("teachers")
    fit(tiny_cfg(root / "a", epochs=2), data=tiny_data())
    fit(tiny_cfg(root / "b", epochs=1, seed=9), data=tiny_data())
    ens = root / "ens.pt"
    save_ensemble(
        build_ensemble([root / "a" / "best.pt", root / "b" / "best.pt"], weights=[3, 1], combine="learned"),
        ens,
    )  # weights count in "learned" combination
    return root / "a" / "best.pt", root / "b" / "best.pt", ens


def test_loss_is_zero_when_the_student_matches_and_positive_otherwise():
    logits = torch.randn(5, 7)
    t = 3.0
    assert distillation_loss(logits, torch.softmax(logits / t, -1), t).item() == pytest.approx(0, abs=1e-6)
    student = torch.zeros(5, 7, requires_grad=True)
    loss = distillation_loss(student, torch.softmax(logits / t, -1), t)
    assert loss.item() > 0
    loss.backward()
    assert student.grad.abs().sum() > 0


def test_teacher_targets_from_a_checkpoint_and_a_weighted_ensemble(teachers):
    a, b, ens = teachers
    crops = torch.rand(4, 1, 40, 40) * 255
    classes = load_checkpoint(a)["meta"]["classes"]
    t = 2.0

    def direct(path):
        model, meta = model_from_checkpoint(path)
        with torch.no_grad():
            return torch.softmax(model((crops / 255 - meta.mean) / meta.std) / t, -1)

    single = Teacher(a, torch.device("cpu"), 40, classes).soft_targets(crops, t)
    torch.testing.assert_close(single, direct(a))
    mixed = Teacher(ens, torch.device("cpu"), 40, classes).soft_targets(crops, t)
    torch.testing.assert_close(mixed, 0.75 * direct(a) + 0.25 * direct(b))
    torch.testing.assert_close(mixed.sum(1), torch.ones(4))


def _weights(path):
    return load_checkpoint(path)["model"]


@pytest.mark.slow
def test_alpha_one_ignores_the_labels_and_alpha_zero_ignores_the_teacher(teachers, tmp_path):
    a, _, _ = teachers
    data = tiny_data()
    rng = np.random.default_rng(0)
    shuffled = TrainingData(
        data.train_images, rng.permutation(data.train_labels), data.val_images, data.val_labels
    )
    fit(tiny_cfg(tmp_path / "kd", teacher=str(a), distill_alpha=1.0), data=data)
    fit(tiny_cfg(tmp_path / "kd_shuffled", teacher=str(a), distill_alpha=1.0), data=shuffled)
    for k, v in _weights(tmp_path / "kd" / "last.pt").items():
        torch.testing.assert_close(v, _weights(tmp_path / "kd_shuffled" / "last.pt")[k], rtol=0, atol=1e-6)
    fit(tiny_cfg(tmp_path / "plain"), data=data)
    fit(tiny_cfg(tmp_path / "alpha0", teacher=str(a), distill_alpha=0.0), data=data)
    plain, alpha0 = _weights(tmp_path / "plain" / "last.pt"), _weights(tmp_path / "alpha0" / "last.pt")
    for k, v in plain.items():
        torch.testing.assert_close(v, alpha0[k], rtol=0, atol=1e-6)
    # ... and the teacher does change training when it has weight.
    kd = _weights(tmp_path / "kd" / "last.pt")
    assert any(not torch.allclose(v, kd[k]) for k, v in plain.items() if v.is_floating_point())


@pytest.mark.slow
def test_a_student_fits_its_teacher(teachers, tmp_path):
    a, _, _ = teachers
    # A confident teacher: the tiny trained model with its output layer scaled up.
    ck = load_checkpoint(a)
    last = [k for k in ck["model"] if k.endswith("weight")][-1]
    ck["model"][last] = ck["model"][last] * 20
    ck[CHECKSUM_KEY] = weights_checksum(ck["model"])  # new weights, so a new checksum
    save_torch(ck, tmp_path / "teacher.pt")
    data = tiny_data()
    noise = TrainingData(
        data.train_images,
        np.random.default_rng(1).permutation(data.train_labels),
        data.val_images,
        data.val_labels,
    )
    # Trained only on the teacher's outputs (the labels are shuffled noise), the student moves towards it.
    h = fit(
        tiny_cfg(
            tmp_path / "kd",
            teacher=str(tmp_path / "teacher.pt"),
            distill_alpha=1.0,
            distill_temperature=1.0,
            epochs=6,
        ),
        data=noise,
    )["history"]
    assert h[-1]["train_loss"] < 0.8 * h[0]["train_loss"]


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"distill_alpha": 1.5}, "distill_alpha"),
        ({"distill_temperature": 0.0}, "distill_temperature"),
        ({"teacher": "missing.pt"}, "teacher not found"),
    ],
)
def test_bad_distillation_settings_are_config_errors(tmp_path, kw, match):
    with pytest.raises(ConfigError, match=match):
        fit(tiny_cfg(tmp_path / "run", **kw), data=tiny_data())


def test_teacher_with_another_crop_size_is_refused(teachers, tmp_path):
    a, _, _ = teachers
    with pytest.raises(ConfigError, match="crops"):
        fit(tiny_cfg(tmp_path / "run", teacher=str(a), augment=AugmentConfig(crop=44)), data=tiny_data())


def test_runs_saved_before_new_config_fields_still_resume(tmp_path):
    fit(tiny_cfg(tmp_path / "run", epochs=1), data=tiny_data())
    last = tmp_path / "run" / "last.pt"
    ck = load_checkpoint(last)
    for k in ("teacher", "distill_alpha", "distill_temperature"):
        del ck["config"][k]
    del ck["config"]["augment"]["copies"]  # a nested field added since
    save_torch(ck, last)
    assert fit(tiny_cfg(tmp_path / "run", epochs=2), data=tiny_data(), resume=True)["epochs_run"] == 2
