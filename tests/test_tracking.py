"""Video: following faces between detections, per-track summary and the timeline plot."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from media import background, face_patch, moving_frames

from ferkit.extras import MissingExtraError
from ferkit.inference.align import polygon_iou
from ferkit.inference.faces import BlazeFaceDetector, Box, FaceAnalyzer, crop_geometry
from ferkit.inference.tracking import VideoFaceTracker, _convert, plot_timeline


class FakeRecognizer:
    """Probabilities from the crop's mean brightness: deterministic, no model needed."""

    classes = ("Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise", "Neutral")

    def predict_proba(self, crops):
        out = np.full((len(crops), 7), 0.05, np.float32)
        for i, c in enumerate(crops):
            out[i, 3 if np.mean(c) > 100 else 6] = 0.7
        return out


@pytest.fixture(scope="module")
def analyzer():
    return FaceAnalyzer(FakeRecognizer(), BlazeFaceDetector())


def _track(analyzer, frames, every):
    tracker = VideoFaceTracker(analyzer, detect_every=every, smooth=1.0)
    return tracker, [tracker.process(f, i / 25) for i, f in enumerate(frames)]


def test_following_matches_detecting_every_frame_with_fewer_detections(analyzer):
    frames = moving_frames(20, 640, 480, side=200)
    every, ref = _track(analyzer, frames, 1)
    followed, out = _track(analyzer, frames, 5)
    assert every.full_detections == 20 and followed.full_detections == 4
    assert all(len(f) == 1 for f in out) and {f[0].track for f in out} == {1}
    ious = [a[0].box.iou(b[0].box) for a, b in zip(out, ref)]
    assert min(ious) > 0.7 and np.mean(ious) > 0.85
    # Followed frames carry keypoints (aligned crops) like detected ones.
    assert all(len(f[0].box.keypoints) == 6 for f in out)


def test_a_lost_face_triggers_a_full_detection_and_a_new_face_appears(analyzer):
    frames = moving_frames(24, 640, 480, side=200)[:6]
    empty = background(640, 480, seed=1)
    tracker = VideoFaceTracker(analyzer, detect_every=10)
    counts = [len(tracker.process(f)) for f in [*frames[:3], empty, empty, *frames[3:]]]
    assert counts == [1, 1, 1, 0, 0, 1, 1, 1]
    # 0: first frame; 3: face lost in its region -> full detection; 4: nothing followed; 5: found again.
    assert tracker.full_detections == 4


def test_region_boxes_keep_the_main_detectors_crop():
    box = Box(100, 80, 60, 70, 0.9)
    src, dst = (1.12, -0.06), (1.15, -0.08)
    conv = _convert(box, src, dst)
    a = crop_geometry(box, scale=src[0], shift=src[1], align=False)
    b = crop_geometry(conv, scale=dst[0], shift=dst[1], align=False)
    assert polygon_iou(a.corners(), b.corners()) > 0.95
    assert _convert(box, src, src) is box


def test_summary_dominant_expression_and_shares(analyzer):
    frames = moving_frames(10, 640, 480, side=200)
    tracker, _ = _track(analyzer, frames, 3)
    [s] = tracker.summary()
    assert s["track"] == 1 and s["frames"] == 10 and s["start"] == 0.0 and s["end"] == pytest.approx(9 / 25)
    assert s["dominant"] in FakeRecognizer.classes
    assert sum(s["share"].values()) == pytest.approx(1.0)
    assert s["share"][s["dominant"]] == max(s["share"].values())
    assert tracker.summary(min_frames=11) == []


def test_timeline_png_and_missing_matplotlib(analyzer, tmp_path, monkeypatch):
    tracker, _ = _track(analyzer, moving_frames(6, 640, 480, side=200), 3)
    out = plot_timeline(tracker.timeline, list(FakeRecognizer.classes), tmp_path / "t.png", title="clip")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    plot_timeline({}, list(FakeRecognizer.classes), tmp_path / "empty.png")  # no face: still a plot
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "matplotlib" else real(n, *a))
    with pytest.raises(MissingExtraError, match=r"\[train\] extra"):
        plot_timeline(tracker.timeline, list(FakeRecognizer.classes), tmp_path / "x.png")


def test_small_face_in_a_vga_frame_is_found_by_the_tiles():
    img = background(640, 480, seed=2)
    patch, (fx, fy, fw, fh) = face_patch(40)  # a 19 px face
    img[300:340, 420:460] = patch
    truth = Box(420 + fx, 300 + fy, fw, fh)
    [b] = BlazeFaceDetector().detect(img)
    assert b.iou(truth) > 0.6
    assert all(b.iou(truth) < 0.5 for b in BlazeFaceDetector("back").detect(img))  # one pass: no good box


def test_several_faces_are_followed_each_in_its_own_track(analyzer):
    from media import scene

    img, truth = scene(3)
    tracker = VideoFaceTracker(analyzer, detect_every=4)
    out = [tracker.process(img) for _ in range(4)]
    assert tracker.full_detections == 1
    assert all([f.track for f in faces] == [1, 2, 3] for faces in out)
    for f, t in zip(out[-1], truth):
        assert f.box.iou(Box(*t)) > 0.4
