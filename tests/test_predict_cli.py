"""``ferkit predict`` on images, folders (recursive) and a short generated video."""

from __future__ import annotations

import csv
import io
import json

import cv2
import pytest
from media import background, encode, moving_frames, scene, tiny_checkpoint, write_video

from ferkit.cli import main
from ferkit.labels import CLASSES


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny.pt")


def _png(path, rgb):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), rgb[..., ::-1])
    return path


def _run(capsys, *argv):
    code = main(["predict", *map(str, argv), "--no-progress"])
    out, err = capsys.readouterr()
    return code, out, err


def test_image_json_lines(tmp_path, capsys, ckpt):
    img = _png(tmp_path / "two.png", scene(2)[0])
    code, out, err = _run(capsys, img, "--model", ckpt)
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert len(rows) == 2 and [r["face"] for r in rows] == [0, 1]
    assert rows[0]["box"][0] < rows[1]["box"][0]
    for r in rows:
        assert r["source"] == str(img) and "frame" not in r
        assert list(r["probs"]) == list(CLASSES)
        assert sum(r["probs"].values()) == pytest.approx(1, abs=1e-4)
        assert r["label"] == max(r["probs"], key=r["probs"].get) and r["score"] == max(r["probs"].values())
    assert "2 face(s) in 1 image(s)" in err


def test_folder_recursive_csv_and_annotate(tmp_path, capsys, ckpt):
    root = tmp_path / "photos"
    _png(root / "a" / "one.png", scene(1, seed=1)[0])
    (root / "b").mkdir(parents=True)
    (root / "b" / "four.jpg").write_bytes(encode(scene(4, seed=2)[0]))
    _png(root / "b" / "c" / "empty.png", background(seed=5))
    (root / "notes.txt").write_text("not an image, ignored")
    out_csv = tmp_path / "out.csv"
    code, _, err = _run(
        capsys, root, "--model", ckpt, "--format", "csv", "-o", out_csv, "--annotate", tmp_path / "ann"
    )
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out_csv.read_text())))
    assert list(rows[0]) == [
        "source",
        "frame",
        "time",
        "face",
        "x",
        "y",
        "w",
        "h",
        "label",
        "score",
        *CLASSES,
    ]
    by_source = {}
    for r in rows:
        by_source.setdefault(r["source"], []).append(r)
    assert {k.split("photos/")[1]: len(v) for k, v in by_source.items()} == {"a/one.png": 1, "b/four.jpg": 4}
    assert all(sum(float(r[c]) for c in CLASSES) == pytest.approx(1, abs=1e-4) for r in rows)
    for rel in ["a/one.png", "b/four.jpg", "b/c/empty.png"]:
        assert (tmp_path / "ann" / rel).is_file()
    assert "5 face(s) in 3 image(s)" in err


def test_face_crops_skip_detection(tmp_path, capsys, ckpt):
    crop = _png(tmp_path / "face.png", background(48, 48))  # no detectable face, still classified as one
    code, out, _ = _run(capsys, crop, "--model", ckpt, "--face-crops")
    assert code == 0
    (row,) = [json.loads(line) for line in out.splitlines()]
    assert row["box"] == [0, 0, 48, 48]


def test_video_rows_tracks_every_and_annotated_video(tmp_path, capsys, ckpt):
    clip = write_video(tmp_path / "clip.avi", moving_frames(12), fps=12)
    code, out, err = _run(capsys, clip, "--model", ckpt, "--every", "2", "--annotate", tmp_path / "ann")
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["frame"] for r in rows] == [0, 2, 4, 6, 8, 10]
    assert rows[1]["time"] == pytest.approx(2 / 12, abs=1e-3)
    assert {r["track"] for r in rows} == {1}  # one face, followed across frames
    cap = cv2.VideoCapture(str(tmp_path / "ann" / "clip.webm"))
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == 12  # every frame written, boxes held between analysed frames


def test_bad_inputs_are_one_line_errors(tmp_path, capsys, ckpt):
    code, _, err = _run(capsys, tmp_path / "missing.png", "--model", ckpt)
    assert code == 5 and "input not found" in err and "Traceback" not in err
    folder = tmp_path / "mixed"
    _png(folder / "ok.png", scene(1)[0])
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff broken")
    code, out, err = _run(capsys, folder, "--model", ckpt)
    assert code != 0 and "skipped" in err and "broken.jpg" in err
    assert len(out.splitlines()) == 1  # the good image was still processed
    code, _, err = _run(capsys, folder / "ok.png", "--model", ckpt, "--every", "0")
    assert code == 5
    code, _, err = _run(capsys, folder / "ok.png", "--model", tmp_path / "nope.pt")
    assert code == 4 and "not found" in err
    code, _, err = _run(capsys, folder / "ok.png", "--model", ckpt, "--detector", "yunet")
    assert code == 4 and "--yunet-model" in err


def test_one_tiny_crop_does_not_sink_the_others(tmp_path, capsys, ckpt):
    folder = tmp_path / "crops"
    _png(folder / "a.png", background(48, 48))
    _png(folder / "tiny.png", background(4, 4))  # too small to be a face crop
    _png(folder / "b.png", background(48, 48))
    code, out, err = _run(capsys, folder, "--model", ckpt, "--face-crops")
    assert code != 0 and "tiny.png" in err
    assert sorted(json.loads(line)["source"].rsplit("/", 1)[-1] for line in out.splitlines()) == [
        "a.png",
        "b.png",
    ]


def test_output_into_a_missing_folder_is_a_clear_error(tmp_path, capsys, ckpt):
    img = _png(tmp_path / "x.png", scene(1)[0])
    code, _, err = _run(capsys, img, "--model", ckpt, "-o", tmp_path / "no" / "such" / "out.jsonl")
    assert code == 5 and "does not exist" in err and err.count("\n") == 1


def test_video_summary_and_timeline(tmp_path, capsys, ckpt):
    clip = write_video(tmp_path / "clip.avi", moving_frames(10), fps=10)
    code, out, err = _run(capsys, clip, "--model", ckpt, "--summary", "--timeline", tmp_path / "t.png")
    assert code == 0, err
    assert len(out.splitlines()) == 10  # the rows still go to standard output
    assert "track 1:" in err and "mostly" in err
    assert (tmp_path / "t.png").read_bytes()[:4] == b"\x89PNG"
    code, _, err = _run(
        capsys, clip, "--model", ckpt, "--summary", tmp_path / "s.json", "--detect-every", "1"
    )
    assert code == 0, err
    [video] = json.loads((tmp_path / "s.json").read_text())["videos"]
    assert video["frames"] == 10 and video["analysed_frames"] == 10
    [track] = video["tracks"]
    assert track["frames"] == 10 and track["dominant"] in CLASSES
    assert sum(track["share"].values()) == pytest.approx(1, abs=1e-3)


def test_video_options_are_checked_first(tmp_path, capsys, ckpt, monkeypatch):
    img = _png(tmp_path / "x.png", scene(1)[0])
    clip = write_video(tmp_path / "clip.avi", moving_frames(4), fps=10)
    code, _, err = _run(capsys, img, "--model", ckpt, "--summary")
    assert code == 5 and "apply to videos" in err
    code, _, err = _run(capsys, clip, "--model", ckpt, "--detect-every", "0")
    assert code == 5 and "--detect-every" in err
    code, _, err = _run(capsys, clip, "--model", ckpt, "--timeline", tmp_path / "t.jpg")
    assert code == 5 and ".png" in err
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "matplotlib" else real(n, *a))
    code, _, err = _run(capsys, clip, "--model", ckpt, "--timeline", tmp_path / "t.png")
    assert code == 6 and "[train] extra" in err and err.count("\n") == 1


def test_no_face_tiny_face_gray_and_huge_photo(tmp_path, capsys, ckpt):
    from media import face_patch

    tiny = background(640, 480, seed=2)
    tiny[300:340, 420:460] = face_patch(40)[0]  # a 19 px face: found, too small to read
    img, [truth] = scene(1, side=200)
    gray = img.mean(axis=2).astype("uint8")
    huge = cv2.resize(img, (6400, 4800))
    files = {
        "empty.png": background(seed=5),
        "tiny.png": tiny,
        "gray.png": gray[..., None].repeat(3, axis=2),
        "huge.jpg": huge,
    }
    for name, rgb in files.items():
        _png(tmp_path / "in" / name, rgb)
    cv2.imwrite(str(tmp_path / "in" / "gray.png"), gray)  # a true one-channel PNG
    code, out, err = _run(capsys, tmp_path / "in", "--model", ckpt)
    assert code == 0, err
    rows = {json.loads(line)["source"].rsplit("/", 1)[-1]: json.loads(line) for line in out.splitlines()}
    assert set(rows) == {"gray.png", "huge.jpg"}
    assert "tiny.png: 1 face(s) smaller than --min-face 20 px left out" in err
    x, y, w, h = rows["huge.jpg"]["box"]  # in the full-size photo's pixels
    assert abs(x + w / 2 - 10 * (truth[0] + truth[2] / 2)) < 10 * truth[2] * 0.3
    assert abs(y + h / 2 - 10 * (truth[1] + truth[3] / 2)) < 10 * truth[3] * 0.3
    code, out, _ = _run(capsys, tmp_path / "in" / "tiny.png", "--model", ckpt, "--min-face", "0")
    assert code == 0 and len(out.splitlines()) == 1
    # --min-face counts the photo's pixels, not those of its reduced decode (the face is ~10x its 200 px
    # square's inner face in the photo, ~3x in the decode)
    side = max(w, h)
    for min_face, n in ((side * 0.8, 1), (side * 1.25, 0)):
        code, out, _ = _run(
            capsys, tmp_path / "in" / "huge.jpg", "--model", ckpt, "--min-face", round(min_face)
        )
        assert code == 0 and len(out.splitlines()) == n


def test_outputs_never_replace_their_inputs(tmp_path, capsys, ckpt):
    from ferkit.inference.video import VideoWriter

    img = _png(tmp_path / "photo.png", scene(1)[0])
    clip = write_video(tmp_path / "clip.avi", moving_frames(4), fps=10)
    webm = tmp_path / "web" / "clip.webm"
    with VideoWriter(webm, 10, (320, 240)) as w:
        for frame in moving_frames(4):
            w.write(frame)
    before = {p: p.read_bytes() for p in (img, clip, webm)}
    for argv, words in [
        ((img, "-o", img), "-o "),
        ((clip, "--summary", clip), "--summary "),
        ((img, "--annotate", tmp_path), "--annotate would write"),  # the same name in the same folder
        ((webm, "--annotate", webm.parent), "--annotate would write"),  # a .webm's annotated copy
    ]:
        code, _, err = _run(capsys, *argv, "--model", ckpt)
        assert code == 5 and words in err and err.count("\n") == 1, err
    assert all(p.read_bytes() == b for p, b in before.items())


def test_an_output_file_is_kept_when_no_input_can_be_read(tmp_path, capsys, ckpt):
    keep = tmp_path / "keep.jsonl"
    keep.write_text("earlier results\n")
    (tmp_path / "fake.png").write_bytes(b"not an image")
    code, _, err = _run(capsys, tmp_path / "fake.png", "--model", ckpt, "-o", keep)
    assert code == 1 and "none of the 1 input(s) could be read" in err
    assert keep.read_text() == "earlier results\n"
