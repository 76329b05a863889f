"""The bundled default model: loads offline, sums to 1, gets clear faces right, matches its card."""

from __future__ import annotations

import hashlib
import json
import re
from importlib import resources
from pathlib import Path

import cv2
import numpy as np
import pytest

from ferkit import Recognizer
from ferkit.labels import CLASSES

ROOT = Path(__file__).resolve().parents[1]
FACES = Path(__file__).parent / "fixtures" / "faces"
WEIGHTS = Path(str(resources.files("ferkit").joinpath("weights")))


@pytest.fixture(scope="module")
def rec():
    return Recognizer.load()  # no path: the bundled model, no network


def test_probabilities_sum_to_one(rec):
    faces = np.random.default_rng(0).integers(0, 256, (5, 48, 48), dtype=np.uint8)
    p = rec.predict_proba(list(faces))
    assert p.shape == (5, 7) and np.allclose(p.sum(1), 1, atol=1e-5) and (p >= 0).all()
    assert rec.classes == CLASSES


def test_clear_faces_are_classified_correctly(rec):
    files = sorted(FACES.glob("*.png"))
    assert len(files) == 14  # two per class
    for f in files:
        [pred] = rec.predict(cv2.imread(str(f), cv2.IMREAD_GRAYSCALE))
        assert pred.label == f.stem.split("_")[0], f.name


def test_files_match_the_model_card():
    card = json.loads((WEIGHTS / "default.json").read_text())
    data = (WEIGHTS / "default.onnx").read_bytes()
    assert hashlib.sha256(data).hexdigest() == card["sha256"]
    assert len(data) == card["bytes"] and len(data) <= 20_000_000
    model_card = (ROOT / "docs" / "MODEL_CARD.md").read_text()
    assert re.search(rf"default\.onnx.*{card['sha256']}", model_card), (
        "docs/MODEL_CARD.md lists another checksum"
    )


def test_readme_example_photo(rec):
    """The README's main job: one face in the bundled photo (a smiling astronaut), read as Happy."""
    from ferkit.data.images import read_image
    from ferkit.inference.faces import FaceAnalyzer

    faces = FaceAnalyzer(rec).analyze(read_image(ROOT / "examples" / "astronaut.png"))
    assert len(faces) == 1 and faces[0].label_score(rec.classes)[0] == "Happy"
