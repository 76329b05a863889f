"""Batched test-time-crop predictions and loading scorers from model files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ferkit.errors import ConfigError, InputError, ModelError
from ferkit.evaluation.scorers import CheckpointScorer, load_scorer, predict_logits, softmax
from ferkit.models import ModelMeta, create_model
from ferkit.models.transforms import normalize, tta_crops
from ferkit.training.checkpoint import make_checkpoint


def tiny_model(seed: int = 0) -> tuple[torch.nn.Module, ModelMeta]:
    torch.manual_seed(seed)
    return create_model("vgg_fer_w16").eval(), ModelMeta(name="vgg_fer_w16")


def save_tiny_checkpoint(path: Path, temperature: float = 1.0, seed: int = 0) -> Path:
    model, meta = tiny_model(seed)
    meta.temperature = temperature
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(make_checkpoint(model, meta), path)
    return path


@pytest.fixture
def images():
    return np.random.default_rng(0).integers(0, 256, size=(5, 48, 48), dtype=np.uint8)


def crop_logits(model, meta, images, mode):
    """Logits of each test-time crop, one by one: (K, N, 7)."""
    crops = tta_crops(normalize(torch.from_numpy(images), meta), meta.input_size, mode)
    with torch.no_grad():
        return torch.stack([model(crops[:, k]) for k in range(crops.shape[1])]).numpy()


def test_ten_crop_is_the_mean_of_the_ten_crops(images):
    model, meta = tiny_model()
    each = crop_logits(model, meta, images, "ten_crop")
    assert each.shape == (10, 5, 7)
    assert not np.allclose(each[0], each[4])  # the crops differ, so the mean is a real average
    got = predict_logits(model, meta, images, tta="ten_crop", batch_size=2)  # batches of 2, 2, 1
    np.testing.assert_allclose(got, each.mean(axis=0), rtol=1e-5, atol=1e-5)


def test_center_mirror_and_batching(images):
    model, meta = tiny_model()
    center = crop_logits(model, meta, images, "center")[0]
    mirror = crop_logits(model, meta, images, "mirror")
    np.testing.assert_allclose(predict_logits(model, meta, images, "center"), center, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        predict_logits(model, meta, images[:, None], "mirror", batch_size=3),
        mirror.mean(axis=0),
        rtol=1e-5,
        atol=1e-5,
    )
    assert predict_logits(model, meta, images[:0]).shape == (0, 7)


def test_predict_logits_rejects_bad_input(images):
    model, meta = tiny_model()
    with pytest.raises(InputError):
        predict_logits(model, meta, images[0])  # one image without the batch axis
    with pytest.raises(ConfigError):
        predict_logits(model, meta, images, tta="five_crop")
    with pytest.raises(InputError):
        predict_logits(model, meta, images, batch_size=0)


def test_predict_logits_leaves_training_mode_alone(images):
    model, meta = tiny_model()
    model.train()
    predict_logits(model, meta, images)
    assert model.training


def test_load_checkpoint_scorer(tmp_path, images):
    path = save_tiny_checkpoint(tmp_path / "run1" / "best.pt", temperature=2.0)
    scorer = load_scorer(path, batch_size=4)
    assert isinstance(scorer, CheckpointScorer)
    assert scorer.name == "run1/best"
    assert scorer.members() == {}
    assert scorer.temperature == 2.0
    model, meta = tiny_model()
    logits = scorer.logits(images, "mirror")
    np.testing.assert_allclose(logits, predict_logits(model, meta, images, "mirror"), rtol=1e-5, atol=1e-5)
    probs = scorer.predict_proba(images, "mirror")
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    np.testing.assert_allclose(probs, softmax(logits / 2.0), rtol=1e-6)
    desc = scorer.describe()
    assert desc["model"] == "vgg_fer_w16" and desc["kind"] == "checkpoint" and desc["temperature"] == 2.0


def test_load_scorer_errors(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        load_scorer(tmp_path / "missing.pt")
    with pytest.raises(ModelError, match="not a model file"):
        load_scorer(tmp_path)
    text = tmp_path / "model.pt"
    text.write_text("not a checkpoint\n")
    with pytest.raises(ModelError, match="not a readable model file"):
        load_scorer(text)
    notes = tmp_path / "notes.txt"
    notes.write_text("hello\n")
    with pytest.raises(ModelError, match="unknown model file type '.txt'"):
        load_scorer(notes)
    other = tmp_path / "other.pt"
    torch.save({"format": "someone-else", "weights": torch.zeros(2)}, other)
    with pytest.raises(ModelError, match="not a ferkit model"):
        load_scorer(other)


def test_torch_file_without_suffix_is_sniffed(tmp_path):
    path = save_tiny_checkpoint(tmp_path / "ckpt.pt")
    bare = path.rename(tmp_path / "mymodel")
    assert isinstance(load_scorer(bare), CheckpointScorer)


def test_load_scorer_unavailable_device(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    path = save_tiny_checkpoint(tmp_path / "best.pt")
    with pytest.raises(ConfigError, match="CUDA is not available"):
        load_scorer(path, device="cuda")
    with pytest.raises(ConfigError):
        load_scorer(path, device="gpu0")


def test_one_loader_dispatches_on_file_type(tmp_path):
    """Every model file goes through models.files: unknown suffixes and torch formats are ModelErrors."""
    f = tmp_path / "m.fake"
    f.write_bytes(b"\0")
    with pytest.raises(ModelError, match="unknown model file type '.fake'"):
        load_scorer(f)
    g = tmp_path / "e.pt"
    torch.save({"format": "test-format", "name": "ens"}, g)
    with pytest.raises(ModelError, match="not a ferkit model"):
        load_scorer(g)
    ck = save_tiny_checkpoint(tmp_path / "best.pt")
    assert isinstance(load_scorer(ck), CheckpointScorer)
