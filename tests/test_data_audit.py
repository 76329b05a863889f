"""Duplicate audit, dataset statistics and the ``ferkit data`` command."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from ferkit.cli import main
from ferkit.data.audit import dataset_stats, duplicate_groups, image_hashes, in_other_split
from ferkit.data.dataset import FaceDataset


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("FERKIT_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def planted(synthetic):
    """21 Training, 7 PublicTest, 7 PrivateTest images with planted copies.

    - Training 0 is copied to Training 1 (same label) -> a within-Training group;
    - Training 3 occurs as PrivateTest 30 with its label and as PrivateTest 31 with another label
      -> one group across splits (and one within PrivateTest), with conflicting labels;
    - Training 9 occurs as PublicTest 22 with the same label.
    """
    images, labels = synthetic(5)
    images, labels = images.copy(), labels.copy()
    splits = np.array(["Training"] * 21 + ["PublicTest"] * 7 + ["PrivateTest"] * 7, object)
    order = np.argsort(np.arange(35) % 5, kind="stable")  # spread the classes over the splits
    images, labels = images[order], labels[order]
    images[1], labels[1] = images[0], labels[0]
    images[30], labels[30] = images[3], labels[3]
    images[31], labels[31] = images[3], (labels[3] + 5) % 7
    images[22], labels[22] = images[9], labels[9]
    return FaceDataset(images, labels, splits)


def test_image_hashes_equal_for_equal_pixels_only(synthetic):
    images, _ = synthetic(2)
    h = image_hashes(images)
    assert h.shape == (14,) and len(set(h.tolist())) == 14
    changed = images.copy()
    changed[3, 10, 10] ^= 1
    h2 = image_hashes(changed)
    assert (h2 == h).sum() == 13 and h2[3] != h[3]
    np.testing.assert_array_equal(image_hashes(images.copy()), h)


def test_duplicate_groups_and_cross_split_mask(planted):
    groups = [g.tolist() for g in duplicate_groups(planted)]
    assert groups == [[0, 1], [3, 30, 31], [9, 22]]
    mask = in_other_split(planted, "PrivateTest")
    assert mask.tolist() == [False, False, True, True, False, False, False]  # rows 28..34
    assert in_other_split(planted, "PublicTest").sum() == 1
    assert in_other_split(planted, "PrivateTest", reference="PublicTest").sum() == 0


def test_dataset_stats_counts_and_duplicates(planted):
    stats = dataset_stats(planted)
    assert stats["total"] == 35
    train = stats["splits"]["Training"]
    assert train["total"] == 21 and sum(train["counts"].values()) == 21
    counts = np.array(list(train["counts"].values()))
    assert train["imbalance_ratio"] == pytest.approx(counts.max() / counts.min(), abs=0.01)
    dup = stats["duplicates"]
    assert dup["all"] == {"groups": 3, "extra_copies": 4, "label_conflicts": 1}
    assert dup["within"]["Training"] == {"groups": 1, "extra_copies": 1, "label_conflicts": 0}
    assert dup["within"]["PrivateTest"] == {"groups": 1, "extra_copies": 1, "label_conflicts": 1}
    assert dup["across"] == {"groups": 2, "extra_copies": 3, "label_conflicts": 1}
    assert dup["between"] == {
        "PublicTest in Training": {"images": 1, "groups": 1, "label_conflicts": 0},
        "PrivateTest in Training": {"images": 2, "groups": 1, "label_conflicts": 1},
    }
    json.dumps(stats)  # JSON-ready


def test_missing_class_gives_no_ratio(synthetic):
    images, labels = synthetic(counts=[3, 0, 2, 2, 2, 2, 2])
    stats = dataset_stats(FaceDataset(images, labels, np.array(["Training"] * len(labels), object)))
    assert stats["splits"]["Training"]["imbalance_ratio"] is None
    assert stats["splits"]["Training"]["missing_classes"] == ["Disgust"]


def _write_planted(root, ds: FaceDataset) -> None:
    names = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
    for i, (img, y, s) in enumerate(zip(ds.images, ds.labels, ds.splits)):
        d = root / ("train" if s == "Training" else "test") / names[y]
        d.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(d / f"{s}_{i}.png"), img)


def test_cli_stats_table_and_json(tmp_path, planted, capsys):
    _write_planted(tmp_path / "fer", planted)
    assert main(["data", "stats", str(tmp_path / "fer")]) == 0
    out = capsys.readouterr().out
    assert "35 images" in out and "max/min" in out
    assert "PrivateTest in Training" in out and "2 images in 1 groups, 1 with conflicting labels" in out
    assert "skipped: nothing" in out
    assert main(["data", "stats", str(tmp_path / "fer"), "--json", "--no-cache"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["duplicates"]["between"]["PrivateTest in Training"]["images"] == 2
    assert stats["splits"]["PublicTest"]["total"] == 7


def test_cli_skip_bad_and_errors(tmp_path, planted, capsys):
    _write_planted(tmp_path / "fer", planted)
    (tmp_path / "fer" / "train" / "sad" / "Training_x.png").write_bytes(b"broken")
    assert main(["data", "stats", str(tmp_path / "fer")]) == 3
    err = capsys.readouterr().err.strip()
    assert err.startswith("ferkit: error: cannot read image") and "Training_x.png" in err and "\n" not in err
    assert main(["data", "stats", str(tmp_path / "fer"), "--skip-bad"]) == 0
    assert "skipped: unreadable image: 1" in capsys.readouterr().out
    assert main(["data", "stats", str(tmp_path / "missing")]) == 3
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.strip().count("\n") == 0
    assert "data not found" in captured.err and "missing" in captured.err


def test_cli_val_fraction_and_cache(tmp_path, synthetic, capsys, monkeypatch):
    images, labels = synthetic(10)
    names = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
    for i, (img, y) in enumerate(zip(images, labels)):
        (tmp_path / "plain" / names[y]).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(tmp_path / "plain" / names[y] / f"{i}.png"), img)
    assert (
        main(["data", "stats", str(tmp_path / "plain"), "--json", "--val-fraction", "0.2", "--seed", "3"])
        == 0
    )
    stats = json.loads(capsys.readouterr().out)
    assert stats["splits"]["PublicTest"]["counts"]["Happy"] == 2
    assert main(["data", "cache", str(tmp_path / "plain")]) == 0
    assert "70 images" in capsys.readouterr().out
    assert list((tmp_path / "cache").glob("*.npz"))
    (tmp_path / "file").write_text("a file where the cache folder should be")
    monkeypatch.setenv("FERKIT_CACHE_DIR", str(tmp_path / "file" / "cache"))
    assert main(["data", "cache", str(tmp_path / "plain")]) == 3
    out, err = capsys.readouterr()
    assert "could not write the data cache" in err and "cached load" not in out


def test_cli_help_texts(capsys):
    for argv in (["data", "--help"], ["data", "stats", "--help"], ["data", "cache", "--help"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--skip-bad", "--val-fraction", "--seed", "--json", "--no-cache"):
        assert flag in out
