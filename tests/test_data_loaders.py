"""FER2013 CSV and folder loaders, generic class folders, AffectNet, load_dataset, bad input."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from ferkit.data.affectnet import load_affectnet
from ferkit.data.fer2013 import load_fer2013, load_fer2013_csv, load_fer2013_folders
from ferkit.data.folders import load_folders
from ferkit.data.load import load_dataset
from ferkit.errors import DataError

FOLDERS = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
SPLITS = ["Training", "PublicTest", "PrivateTest"]
USER_CACHE = os.environ.get("FERKIT_CACHE_DIR")


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("FERKIT_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def fer(synthetic):
    """The same small FER2013 as arrays, in split order then label order (as both loaders return it)."""
    parts = [synthetic(3, seed=i) for i in range(3)]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    splits = np.repeat(SPLITS, [len(p[1]) for p in parts])
    return images, labels, splits


def write_csv(path: Path, images, labels, splits, header=("emotion", "pixels", "Usage")) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for img, y, s in zip(images, labels, splits):
            row = {"emotion": int(y), "pixels": " ".join(map(str, img.ravel().tolist())), "Usage": s}
            w.writerow([row[h] for h in header])
    return path


def write_tree(root: Path, images, labels, splits, ext="png", prefix=True, tops=None, names=FOLDERS) -> Path:
    tops = tops or {"Training": "train", "PublicTest": "test", "PrivateTest": "test"}
    for i, (img, y, s) in enumerate(zip(images, labels, splits)):
        d = root / tops[s] / names[y]
        d.mkdir(parents=True, exist_ok=True)
        name = f"{s}_{i}.{ext}" if prefix else f"img{i}.{ext}"
        assert cv2.imwrite(str(d / name), img)
    return root


def test_csv_and_png_folders_give_identical_arrays(tmp_path, fer):
    images, labels, splits = fer
    names = [n.upper() if n == "fear" else n for n in FOLDERS]  # any case of folder names
    a = load_fer2013_csv(write_csv(tmp_path / "fer2013.csv", *fer))
    b = load_fer2013_folders(write_tree(tmp_path / "fer", *fer, names=names))
    for ds in (a, b):
        assert ds.images.dtype == np.uint8 and ds.images.shape == (len(labels), 48, 48)
        assert ds.labels.dtype == np.int64
        np.testing.assert_array_equal(ds.images, images)
        np.testing.assert_array_equal(ds.labels, labels)
        np.testing.assert_array_equal(ds.splits, splits)
        assert ds.skipped == {}
    assert a.sources[0] == f"{tmp_path / 'fer2013.csv'}:2"  # line 1 is the header
    assert b.sources[0].endswith("Training_0.png") and Path(b.sources[0]).is_file()
    # load_fer2013 / load_dataset dispatch on what the path is
    np.testing.assert_array_equal(load_fer2013(tmp_path / "fer2013.csv").images, images)
    np.testing.assert_array_equal(load_dataset(tmp_path / "fer").images, images)


def test_csv_column_order_and_spaces_in_header(tmp_path, fer):
    path = write_csv(tmp_path / "icml.csv", *fer, header=("emotion", "Usage", "pixels"))
    path.write_text(path.read_text().replace("emotion,Usage,pixels", "emotion, Usage, pixels", 1))
    np.testing.assert_array_equal(load_fer2013_csv(path).images, fer[0])


def test_jpeg_folders_load_close_to_the_pixels(tmp_path, fer):
    ds = load_dataset(write_tree(tmp_path / "fer", *fer, ext="jpg"))
    np.testing.assert_array_equal(ds.labels, fer[1])
    np.testing.assert_array_equal(ds.splits, fer[2])
    err = np.abs(ds.images.astype(int) - fer[0].astype(int))
    assert err.mean() < 8 and ds.sources[0].endswith(".jpg")


def test_split_from_file_prefix_wins_over_folder(tmp_path, fer):
    images, labels, _ = fer
    # every file in test/, but its prefix names the official split
    splits = np.array(
        ["PrivateTest", "PublicTest"] * (len(labels) // 2) + ["PrivateTest"] * (len(labels) % 2)
    )
    ds = load_fer2013_folders(
        write_tree(tmp_path / "fer", images, labels, splits, tops={s: "test" for s in SPLITS})
    )
    assert sorted(ds.splits.tolist()) == sorted(splits.tolist())
    for src, s in zip(ds.sources, ds.splits):
        assert Path(src).name.startswith(s + "_")


def test_without_prefixes_train_is_split_stratified_and_seeded(tmp_path, synthetic):
    images, labels = synthetic(20)
    splits = np.where(np.arange(len(labels)) % 5 == 0, "PrivateTest", "Training")
    root = write_tree(tmp_path / "plain", images, labels, splits, prefix=False)
    ds = load_dataset(root, val_fraction=0.25, seed=1)
    assert ds.split_names() == ["Training", "PublicTest", "PrivateTest"]
    in_test = np.array([Path(s).parts[-3] == "test" for s in ds.sources])
    assert in_test.sum() == 28 and (ds.splits[in_test] == "PrivateTest").all()  # test/ stays the test split
    val = ds.split("PublicTest").class_counts()
    train = ds.split("Training").class_counts()
    np.testing.assert_array_equal(val, [4] * 7)  # 25% of each class's 16 train images
    np.testing.assert_array_equal(train, [12] * 7)
    again = load_dataset(root, val_fraction=0.25, seed=1)
    other = load_dataset(root, val_fraction=0.25, seed=2)
    np.testing.assert_array_equal(again.splits, ds.splits)
    assert (other.splits != ds.splits).any()
    assert "PublicTest" not in load_dataset(root, val_fraction=0).split_names()


def test_csv_without_usage_is_training_with_a_carved_validation_split(tmp_path, synthetic):
    images, labels = synthetic(10)
    path = write_csv(
        tmp_path / "train.csv", images, labels, ["Training"] * len(labels), header=("emotion", "pixels")
    )
    ds = load_fer2013_csv(path, val_fraction=0.2)
    np.testing.assert_array_equal(ds.split("PublicTest").class_counts(), [2] * 7)


def test_official_splits_are_never_re_split(tmp_path, fer):
    ds = load_fer2013_csv(write_csv(tmp_path / "f.csv", *fer), val_fraction=0.5)
    np.testing.assert_array_equal(ds.splits, fer[2])


def test_class_folders_with_contempt_and_96px_colour(tmp_path):
    root = tmp_path / "affectnet"
    names = ["anger", "contempt", "disgust", "fear", "happy", "neutral", "sad", "surprise"]
    expected = {"anger": 0, "disgust": 1, "fear": 2, "happy": 3, "neutral": 6, "sad": 4, "surprise": 5}
    rgb = (200, 100, 50)  # gray = 0.299 R + 0.587 G + 0.114 B = 124.2
    for k, name in enumerate(names):
        (root / name).mkdir(parents=True)
        for j in range(3):
            img = np.zeros((96, 96, 3), np.uint8)
            img[:] = rgb[::-1]  # OpenCV writes BGR
            img[0, 0] = (k, j, 0)  # make files differ
            cv2.imwrite(str(root / name / f"image{j:07d}.png"), img)
    ds = load_affectnet(root)
    assert len(ds) == 21 and ds.images.shape == (21, 48, 48)
    assert ds.skipped == {"dropped class contempt": 3}
    assert (ds.splits == "Training").all()
    for src, y in zip(ds.sources, ds.labels):
        assert expected[Path(src).parent.name] == y
    assert np.median(ds.images) == 124  # colour -> gray with the right channel order
    # a user mapping overrides the defaults and can keep contempt
    mapped = load_folders(root, mapping={"contempt": "Disgust", "anger": 4}, split="Extra")
    assert mapped.skipped == {} and len(mapped) == 24 and (mapped.splits == "Extra").all()
    assert (mapped.labels[[Path(s).parent.name == "anger" for s in mapped.sources]] == 4).all()
    assert mapped.class_counts()[1] == 6


def test_split_level_above_class_folders(tmp_path, synthetic):
    images, labels = synthetic(2)
    for top in ["Train", "val", "Test"]:
        for i, (img, y) in enumerate(zip(images, labels)):
            d = tmp_path / "an" / top / ["anger", "disgust", "fear", "happy", "sad", "surprise", "neutral"][y]
            d.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(d / f"{i}.png"), img)
    ds = load_affectnet(tmp_path / "an")
    assert {s: int((ds.splits == s).sum()) for s in ds.split_names()} == {
        "Training": 14,
        "PublicTest": 14,
        "PrivateTest": 14,
    }


def test_bad_mapping_target(tmp_path, fer):
    with pytest.raises(DataError, match="'Bored' is not one of"):
        load_folders(write_tree(tmp_path / "f", *fer), mapping={"happy": "Bored"})


# ---------------------------------------------------------------- bad input


def _csv_lines(tmp_path, fer, edit):
    path = write_csv(tmp_path / "fer2013.csv", *fer)
    lines = path.read_text().splitlines()
    edit(lines)
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda ls: ls.__setitem__(3, ls[3].rsplit(" ", 1)[0] + ",Training"),
            r"fer2013.csv:4: 2303 pixel values, expected 2304",
        ),
        (lambda ls: ls.__setitem__(5, "7" + ls[5][1:]), r"fer2013.csv:6: emotion '7' is not a label 0..6"),
        (lambda ls: ls.__setitem__(5, "x" + ls[5][1:]), r"fer2013.csv:6: emotion 'x'"),
        (
            lambda ls: ls.__setitem__(2, ls[2].replace("Training", "Train")),
            r"fer2013.csv:3: Usage 'Train' is not one",
        ),
        (lambda ls: ls.__setitem__(9, "3,1 2 3"), r"fer2013.csv:10: 2 fields, expected 3"),
        (lambda ls: ls.__setitem__(0, "label,pixels,Usage"), r"fer2013.csv:1: no emotion column"),
    ],
)
def test_bad_csv_rows_name_the_line(tmp_path, fer, edit, message):
    with pytest.raises(DataError, match=message):
        load_fer2013_csv(_csv_lines(tmp_path, fer, edit))


def test_bad_pixel_values_are_explained(tmp_path, fer):
    def out_of_range(ls):
        ls[7] = ls[7].replace(",", ",300 ", 1).rsplit(" ", 1)[0] + ",Training"

    with pytest.raises(DataError, match=r"fer2013.csv:8: pixel values must be 0..255, found .*300"):
        load_fer2013_csv(_csv_lines(tmp_path, fer, out_of_range))

    def not_int(ls):
        ls[2] = ls[2].replace(",", ",abc ", 1).rsplit(" ", 1)[0] + ",Training"

    with pytest.raises(DataError, match=r"fer2013.csv:3: pixel value 'abc' is not an integer"):
        load_fer2013_csv(_csv_lines(tmp_path, fer, not_int))


def test_skip_bad_csv_rows_are_counted(tmp_path, fer):
    def two_bad(ls):
        ls[3] = ls[3].rsplit(" ", 1)[0] + ",Training"  # wrong pixel count (removes the last value)
        ls[5] = "9" + ls[5][1:]

    ds = load_fer2013_csv(_csv_lines(tmp_path, fer, two_bad), skip_bad=True)
    assert ds.skipped == {"bad CSV row": 2}
    assert len(ds) == len(fer[1]) - 2
    keep = np.ones(len(fer[1]), bool)
    keep[[2, 4]] = False
    np.testing.assert_array_equal(ds.images, fer[0][keep])


def test_missing_paths(tmp_path):
    for call in (
        lambda: load_dataset(tmp_path / "nope"),
        lambda: load_fer2013_csv(tmp_path / "x.csv"),
        lambda: load_folders(tmp_path / "nope"),
        lambda: load_affectnet(tmp_path / "nope"),
    ):
        with pytest.raises(DataError, match="not found"):
            call()
    (tmp_path / "a.txt").write_text("hi")
    with pytest.raises(DataError, match="a.txt: expected a FER2013 .csv file or a folder"):
        load_dataset(tmp_path / "a.txt")


def test_unreadable_and_non_image_files(tmp_path, fer):
    root = write_tree(tmp_path / "fer", *fer)
    broken = root / "train" / "happy" / "Training_broken.png"
    broken.write_bytes(b"not a png at all")
    with pytest.raises(DataError, match=r"cannot read image .*Training_broken.png"):
        load_dataset(root)
    notes = root / "test" / "sad" / "notes.txt"
    notes.write_text("x")
    with pytest.raises(DataError, match=r"not an image file: .*notes.txt"):
        load_dataset(root)
    ds = load_dataset(root, skip_bad=True)
    assert ds.skipped == {"unreadable image": 1, "not an image file": 1}
    assert len(ds) == len(fer[1])


def test_empty_class_folder_and_no_images(tmp_path, fer):
    root = write_tree(tmp_path / "fer", *fer)
    (root / "train" / "contempt").mkdir()  # unknown and empty: fine, nothing to drop
    (root / "test" / "disgust_extra").mkdir()
    empty = root / "train" / "Neutral2"
    empty.mkdir()
    assert load_dataset(root).skipped == {
        "dropped class contempt": 0,
        "dropped class disgust_extra": 0,
        "dropped class neutral2": 0,
    }
    ds = load_folders(root / "train", mapping={"neutral2": "Neutral"}, skip_bad=True)
    assert ds.skipped["empty class folder"] == 1
    with pytest.raises(DataError, match=r"empty class folder: .*Neutral2"):
        load_folders(root / "train", mapping={"neutral2": "Neutral"})
    (tmp_path / "nothing" / "happy").mkdir(parents=True)
    (tmp_path / "nothing" / "happy" / "a.jpg").write_bytes(b"")
    (tmp_path / "void").mkdir()
    with pytest.raises(DataError, match=r"no images found under .*void"):
        load_dataset(tmp_path / "void")
    with pytest.raises(DataError, match=r"cannot read image .*a.jpg"):
        load_dataset(tmp_path / "nothing")


def test_kind_mismatch_and_unknown_kind(tmp_path, fer):
    path = write_csv(tmp_path / "f.csv", *fer)
    with pytest.raises(DataError, match="kind 'folders' asked for"):
        load_dataset(path, kind="folders")
    with pytest.raises(DataError, match="unknown data kind"):
        load_dataset(path, kind="parquet")
    with pytest.raises(DataError, match="val_fraction must be in"):
        load_dataset(path, val_fraction=1.5)


@pytest.mark.slow
def test_real_fer2013(shared_data, monkeypatch):
    from ferkit.data.audit import in_other_split

    # the user's own cache: the first run decodes (~4 s), later runs load it (~0.2 s)
    if USER_CACHE:
        monkeypatch.setenv("FERKIT_CACHE_DIR", USER_CACHE)
    else:
        monkeypatch.delenv("FERKIT_CACHE_DIR")
    ds = load_dataset(shared_data / "fer2013")
    warm = load_dataset(shared_data / "fer2013")
    assert {s: int((ds.splits == s).sum()) for s in ds.split_names()} == {
        "Training": 28709,
        "PublicTest": 3589,
        "PrivateTest": 3589,
    }
    np.testing.assert_array_equal(warm.images, ds.images)
    assert int(in_other_split(ds, "PrivateTest").sum()) == 260
