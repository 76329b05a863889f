"""Face detection, cropping, smoothing, drawing and video I/O (no model needed except where noted)."""

from __future__ import annotations

import numpy as np
import pytest
from media import background, moving_frames, scene, write_video, write_y4m

from ferkit.errors import ConfigError, InputError, ModelError
from ferkit.inference.annotate import draw_faces
from ferkit.inference.faces import (
    Box,
    Face,
    HaarDetector,
    YuNetDetector,
    create_detector,
    crop_face,
    crop_faces,
)
from ferkit.inference.smoothing import FaceSmoother
from ferkit.inference.video import VideoReader, VideoWriter
from ferkit.labels import CLASSES


@pytest.fixture(scope="module")
def haar():
    return HaarDetector()


@pytest.mark.parametrize("n", [1, 2, 4])
def test_haar_finds_every_face_left_to_right(haar, n):
    img, truth = scene(n)
    faces = crop_faces(img, haar.detect(img))
    assert len(faces) == n
    xs = [f.box.x for f in faces]
    assert xs == sorted(xs)
    for f, t in zip(faces, truth):
        assert f.box.iou(Box(*t)) > 0.6
        assert f.crop.shape == (48, 48) and f.crop.dtype == np.uint8


def test_no_face_is_an_empty_list(haar):
    assert haar.detect(background(seed=3)) == []
    assert crop_faces(background(), []) == []


def test_detector_accepts_gray_rgba_and_large_images(haar):
    img, _ = scene(1)
    gray = img.mean(axis=2).astype(np.uint8)
    rgba = np.dstack([img, np.full(img.shape[:2], 255, np.uint8)])
    assert len(haar.detect(gray)) == 1 and len(haar.detect(rgba)) == 1
    import cv2

    big = cv2.resize(img, (1920, 1440))  # shrunk to 640 for detection; boxes come back in full-size pixels
    (b,) = haar.detect(big)
    (s,) = haar.detect(img)
    assert abs(b.x - 3 * s.x) < 12 and abs(b.w - 3 * s.w) < 12


def test_square_box_and_margin():
    b = Box(10, 20, 40, 60)
    sq = b.square(0.0)
    assert sq.w == sq.h == 60 and sq.x + sq.w / 2 == pytest.approx(30, abs=1) and sq.y == 20
    assert b.square(0.25).w == 90
    assert Box(0, 0, 10, 10).iou(Box(5, 0, 10, 10)) == pytest.approx(1 / 3)


def test_crop_outside_the_image_is_padded():
    img = np.arange(100 * 100, dtype=np.uint32).reshape(100, 100).astype(np.uint8)
    c = crop_face(img, Box(-30, -30, 80, 80))
    assert c.shape == (48, 48)
    c2 = crop_face(img, Box(60, 60, 80, 80), size=32)
    assert c2.shape == (32, 32)


def test_detector_choice_errors(tmp_path):
    with pytest.raises(ModelError, match="yunet-model"):
        create_detector("yunet")
    with pytest.raises(ModelError, match="not found"):
        YuNetDetector(tmp_path / "missing.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ModelError):
        YuNetDetector(bad)
    with pytest.raises(ConfigError):
        create_detector("dlib")
    with pytest.raises(ModelError):
        HaarDetector(tmp_path / "missing.xml")


def _face(x, probs):
    return Face(
        Box(x, 50, 80, 80), Box(x, 50, 80, 80), np.zeros((48, 48), np.uint8), np.asarray(probs, np.float32)
    )


def test_smoother_keeps_track_ids_and_averages():
    sm = FaceSmoother(alpha=0.5, max_missed=1)
    one_hot = np.eye(7, dtype=np.float32)
    a, b = sm.update([_face(0, one_hot[3]), _face(300, one_hot[0])])
    assert (a.track, b.track) == (1, 2)
    # next frame: faces moved a little, predictions flipped to class 6 for the first one
    a2, b2 = sm.update([_face(6, one_hot[6]), _face(305, one_hot[0])])
    assert (a2.track, b2.track) == (1, 2)
    assert a2.probs[3] == pytest.approx(0.5) and a2.probs[6] == pytest.approx(0.5)
    assert b2.probs[0] == pytest.approx(1.0)
    # a face far away is a new track; old tracks are dropped after max_missed updates
    (c,) = sm.update([_face(150, one_hot[1])])
    assert c.track == 3
    sm.update([])
    assert [t.id for t in sm.tracks] == [3]
    sm.update([])
    assert sm.tracks == []
    with pytest.raises(ValueError):
        FaceSmoother(alpha=0)


def test_draw_faces_marks_the_box_and_keeps_the_input():
    img = np.full((120, 200), 100, np.uint8)
    f = _face(40, np.eye(7)[3])
    f.box = Box(40, 30, 60, 60)
    out = draw_faces(img, [f], CLASSES)
    assert out.shape == (120, 200, 3) and img.max() == 100
    assert (out != 100).any(axis=2)[30:92, 40].all()  # the box's left edge is drawn


def test_video_round_trip_and_every(tmp_path):
    frames = moving_frames(10)
    path = write_video(tmp_path / "clip.avi", frames, fps=10)
    with VideoReader(path) as r:
        assert (r.info.width, r.info.height) == (320, 240) and r.info.fps == pytest.approx(10)
        got = list(r.frames(every=3))
    assert [i for i, _, f, due in got if due] == [0, 3, 6, 9]
    assert got[3][1] == pytest.approx(0.3)
    assert got[0][2].shape == (240, 320, 3)
    with VideoWriter(tmp_path / "out.mp4", 10, (320, 240)) as w:
        for f in frames:
            w.write(f)
    with VideoReader(tmp_path / "out.mp4") as r:
        assert sum(1 for _ in r.frames()) == 10
    with pytest.raises(InputError):
        VideoReader(tmp_path / "missing.mp4")
    (tmp_path / "junk.mp4").write_bytes(b"junk")
    with pytest.raises(InputError):
        VideoReader(tmp_path / "junk.mp4")


def test_an_implausible_frame_rate_reads_as_unknown(tmp_path):
    """A header claiming 2^31 frames/s (libvpx refuses such a writer) is read as 25, like a missing rate."""
    path = write_y4m(tmp_path / "fast.y4m", moving_frames(3, 32, 32, 16), fps=2147483647)
    with VideoReader(path) as r:
        assert r.info.fps == 25.0 and sum(1 for _ in r.frames()) == 3
        with VideoWriter(tmp_path / "out.webm", r.info.fps, (32, 32)) as w:
            w.write(moving_frames(1, 32, 32, 16)[0])
