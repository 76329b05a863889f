"""BlazeFace (bundled ONNX), aligned crops and ``ferkit.analyze`` on synthetic scenes from tests/media.py."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from media import ASTRONAUT, astronaut, background, encode, scene

import ferkit
from ferkit.errors import ConfigError, InputError
from ferkit.inference.align import CropGeometry, aligned_crop, polygon_iou, roll_angle
from ferkit.inference.blazeface import SPECS, anchor_centres, weighted_nms
from ferkit.inference.faces import BlazeFaceDetector, Box, FaceAnalyzer, create_detector, crop_faces


@pytest.fixture(scope="module")
def det():
    return BlazeFaceDetector()


@pytest.fixture(scope="module")
def analyzer():
    return FaceAnalyzer()


def _rotate(img: np.ndarray, angle: float) -> np.ndarray:
    import cv2

    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    return cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_REFLECT)


def test_anchor_counts_match_the_models():
    assert len(anchor_centres(SPECS["short"])) == 896
    assert len(anchor_centres(SPECS["full"])) == 2304
    assert len(anchor_centres(SPECS["back"])) == 896


def test_weighted_nms_averages_overlapping_detections():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], np.float32)
    kps = np.zeros((3, 6, 2), np.float32)
    scores = np.array([0.9, 0.9, 0.7], np.float32)
    b, _, s = weighted_nms(boxes, kps, scores)
    assert len(b) == 2 and list(s) == pytest.approx([0.9, 0.7])
    assert b[0] == pytest.approx([0.5, 0.5, 10.5, 10.5])
    assert weighted_nms(boxes[:0], kps[:0], scores[:0])[0].shape == (0, 4)


@pytest.mark.parametrize("model", ["auto", "short", "full", "back"])
def test_each_model_finds_the_face_with_keypoints(model):
    img, [truth] = scene(1, side=260)
    [b] = create_detector("blazeface", model).detect(img)
    assert b.iou(Box(*truth)) > 0.5 and 0.5 < b.score <= 1.0
    assert len(b.keypoints) == 6
    (rx, ry), (lx, ly) = b.keypoints[:2]
    assert rx < lx and abs(ry - ly) < 0.15 * b.w  # the subject's right eye is on the image's left


@pytest.mark.parametrize("n", [1, 2, 4])
def test_every_face_left_to_right(det, n):
    img, truth = scene(n)
    faces = crop_faces(img, det.detect(img))
    assert len(faces) == n
    for f, t in zip(faces, truth):
        assert f.box.iou(Box(*t)) > 0.4
        assert f.crop.shape == (48, 48) and f.crop.dtype == np.uint8


def test_no_face_tiny_face_gray_rgba_and_huge(det):
    import cv2

    assert det.detect(background(seed=3)) == []
    img, _ = scene(1, side=24)  # a 10-pixel face: found once at most (tiles), never twice
    assert len(det.detect(img)) <= 1
    img, [truth] = scene(1, side=200)
    gray = img.mean(axis=2).astype(np.uint8)
    rgba = np.dstack([img, np.full(img.shape[:2], 255, np.uint8)])
    assert len(det.detect(gray)) == 1 and len(det.detect(rgba)) == 1
    big = cv2.resize(img, (3840, 2880))
    [b] = det.detect(big)
    assert b.iou(Box(*[6 * v for v in truth])) > 0.4


def test_min_size_and_unknown_model():
    img, _ = scene(1, side=200)
    assert BlazeFaceDetector(min_size=400).detect(img) == []
    with pytest.raises(ConfigError):
        BlazeFaceDetector("huge")


def test_roll_angle_and_aligned_crop_turn_the_face_upright(det):
    img, _ = scene(1, side=260)
    upright = crop_faces(img, det.detect(img))[0]
    for angle in (-30, 25):
        rot = _rotate(img, angle)
        [b] = det.detect(rot)
        # cv2 turns counter-clockwise for a positive angle: the eye line then rises to the right.
        assert roll_angle(np.asarray(b.keypoints)) == pytest.approx(-angle, abs=8)
        [aligned] = crop_faces(rot, [b])
        [plain] = crop_faces(rot, [b], align=False)
        err_aligned = np.abs(aligned.crop.astype(int) - upright.crop).mean()
        err_plain = np.abs(plain.crop.astype(int) - upright.crop).mean()
        assert err_aligned < err_plain
        assert aligned.angle == pytest.approx(-angle, abs=8)


def test_aligned_crop_geometry():
    g = CropGeometry(50, 50, 20, 0.0)
    assert polygon_iou(g.corners(), g.corners()) == pytest.approx(1.0)
    g45 = CropGeometry(50, 50, 20, 45.0)
    assert polygon_iou(g.corners(), g45.corners()) == pytest.approx(1 / math.sqrt(2), abs=1e-3)
    img = np.zeros((100, 100), np.uint8)
    img[:, 50:] = 255
    crop = aligned_crop(img, CropGeometry(50, 50, 40, 90.0))  # a quarter turn: left/right become top/bottom
    assert crop[:20].mean() > 200 and crop[-20:].mean() < 50


def test_analyze_takes_path_bytes_pil_and_array(analyzer):
    from PIL import Image

    rgb = astronaut()
    results = [
        ferkit.analyze(ASTRONAUT),
        analyzer.analyze(str(ASTRONAUT)),
        analyzer.analyze(encode(rgb, ".png")),
        analyzer.analyze(Image.fromarray(rgb)),
        analyzer.analyze(rgb),
    ]
    for faces in results:
        [f] = faces
        assert f.label == "Happy" and 0 < f.score <= 1
        assert set(f.probabilities) == set(ferkit.CLASSES)
        assert len(f.keypoints) == 6 and f.box.score > 0.5
    d = results[0][0].to_dict()
    assert {"box", "keypoints", "label", "score", "probs", "detection_score", "angle"} <= set(d)
    [rec] = results[0].to_records()
    assert rec["label"] == "Happy" and "right_eye_x" in rec and "Neutral" in rec


def test_analyze_left_to_right_no_face_and_bad_input(analyzer):
    img, _ = scene(3)
    faces = analyzer.analyze(img)
    assert len(faces) == 3 and [f.box.x for f in faces] == sorted(f.box.x for f in faces)
    assert analyzer.analyze(background(seed=5)) == []
    with pytest.raises(InputError):
        analyzer.analyze(b"not an image")
    with pytest.raises(InputError):
        analyzer.analyze(np.zeros((4, 4, 7), np.uint8))
    gray = img.mean(axis=2).astype(np.uint8)
    assert len(analyzer.analyze(gray)) == 3
    assert len(FaceAnalyzer(analyzer.recognizer, min_face=400).analyze(img)) == 0


def test_to_dataframe_with_or_without_pandas(analyzer):
    faces = analyzer.analyze(astronaut())
    try:
        import pandas  # noqa: F401
    except ImportError:
        with pytest.raises(InputError, match="pip install pandas"):
            faces.to_dataframe()
    else:
        df = faces.to_dataframe()
        assert list(df["label"]) == ["Happy"]


def test_predict_on_a_whole_photo_warns_and_points_to_analyze(analyzer):
    rec = analyzer.recognizer
    with pytest.warns(UserWarning, match=r"ferkit\.analyze"):
        rec.predict(astronaut())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rec.predict(np.full((48, 48), 128, np.uint8))
        rec.predict(np.full((224, 224, 3), 128, np.uint8))


def test_lazy_exports():
    assert ferkit.FaceAnalyzer is FaceAnalyzer
    assert callable(ferkit.analyze)
    assert "analyze" in ferkit.__all__ and "FaceAnalyzer" in ferkit.__all__


def test_bad_input_to_analyze_is_a_clear_result_or_error(analyzer):
    from media import face_patch, png_bomb

    tiny = background(640, 480, seed=2)
    tiny[300:340, 420:460] = face_patch(40)[0]  # found by the detector, too small to read
    faces = analyzer.analyze(tiny)
    assert faces == [] and faces.too_small == 1
    assert len(FaceAnalyzer(analyzer.recognizer, min_face=0).analyze(tiny)) == 1
    empty = analyzer.analyze(background(seed=5))
    assert empty == [] and empty.too_small == 0
    gray = scene(1, side=200)[0].mean(axis=2).astype(np.uint8)
    assert len(analyzer.analyze(gray)) == 1 and len(analyzer.analyze(gray[..., None])) == 1
    with pytest.raises(InputError, match="pixels|large"):
        analyzer.analyze(png_bomb())


def test_crop_calibration_per_network_and_nested_detections():
    from ferkit.inference.faces import CROP_CALIBRATION, _drop_nested

    for model in ("auto", "short", "full", "back"):
        d = BlazeFaceDetector(model)
        assert (d.crop_scale, d.crop_shift) == CROP_CALIBRATION["back" if model == "auto" else model]
        assert d.crop_scale > 1 and d.crop_shift < 0  # BlazeFace's box is tighter and lower than FER2013's
    boxes = np.array([[0, 0, 100, 100], [10, 10, 30, 30], [90, 90, 140, 140], [200, 0, 220, 20]], np.float32)
    kps = np.zeros((4, 6, 2), np.float32)
    b, _, s = _drop_nested(boxes, kps, np.array([0.9, 0.95, 0.8, 0.7], np.float32))
    assert b.tolist() == boxes[[0, 2, 3]].tolist() and s.tolist() == pytest.approx([0.9, 0.8, 0.7])


def test_auto_confirms_its_less_sure_faces_with_the_short_range_network():
    det = BlazeFaceDetector()
    assert det.verify and not BlazeFaceDetector("back").verify
    img, [(x, y, w, h)] = scene(1, side=200)
    assert det._confirmed(img, np.array([x, y, x + w, y + h], np.float32))
    assert not det._confirmed(background(seed=4), np.array([300, 200, 360, 260], np.float32))


class _UprightBarVerifier:
    """Stands in for the short-range network: "sees a face" only where a bright bar lies level."""

    def __init__(self) -> None:
        self.calls = 0

    def detect(self, rgb: np.ndarray):
        self.calls += 1
        ys, xs = np.nonzero(rgb.mean(axis=2) > 128)
        if len(xs) == 0 or np.ptp(ys) > 0.3 * np.ptp(xs):
            return np.zeros((0, 4), np.float32), np.zeros((0, 6, 2), np.float32), np.zeros(0, np.float32)
        x, y = xs.mean(), ys.mean()
        return (
            np.array([[x - 5, y - 5, x + 5, y + 5]], np.float32),
            np.zeros((1, 6, 2), np.float32),
            np.ones(1),
        )


def test_a_rolled_face_is_confirmed_turned_upright_by_its_eyes():
    import cv2

    img = np.zeros((400, 400, 3), np.uint8)
    bar = cv2.boxPoints(((200.0, 200.0), (80.0, 10.0), 30.0)).astype(np.int32)
    cv2.fillPoly(img, [bar], (255, 255, 255))
    a = math.radians(30)
    kps = np.array(
        [[200 - 30 * math.cos(a), 200 - 30 * math.sin(a)], [200 + 30 * math.cos(a), 200 + 30 * math.sin(a)]]
    )
    kps = np.concatenate([kps, np.full((4, 2), 200.0)]).astype(np.float32)
    assert roll_angle(kps) == pytest.approx(30, abs=0.01)
    det = BlazeFaceDetector()
    det._verifier = _UprightBarVerifier()
    box = np.array([160, 160, 240, 240], np.float32)
    assert not det._confirmed(img, box)  # as the image has it, the bar is not level
    assert det._confirmed(img, box, kps)
    level = kps.copy()
    level[1] = [230, kps[0, 1] + 2]  # eyes nearly level: no upright retry
    calls = det._verifier.calls
    assert not det._confirmed(img, box, level) and det._verifier.calls == calls + 2


def test_a_photo_decoded_reduced_gets_its_boxes_and_min_face_in_its_own_pixels(tmp_path):
    import cv2

    img, [(x, y, w, h)] = scene(1, width=800, height=600, side=240, seed=2)
    big = cv2.resize(img, (4000, 3000), interpolation=cv2.INTER_LINEAR)  # decoded reduced to 2048 px
    path = tmp_path / "big.jpg"
    path.write_bytes(encode(big))
    [face] = FaceAnalyzer(min_face=0).analyze(path)
    truth = Box(x * 5, y * 5, w * 5, h * 5)
    assert face.box.iou(truth) > 0.5  # in the 4000 x 3000 photo's pixels, not the reduced decode's
    # The face is ~600 px in the photo but ~300 px in the reduced decode: min_face counts the photo's.
    assert len(FaceAnalyzer(min_face=450).analyze(path)) == 1
    kept = FaceAnalyzer(min_face=800).detect(path)
    assert len(kept) == 0 and kept.too_small == 1
    with pytest.raises(InputError, match="scale="):  # a file has its own scale
        FaceAnalyzer().detect(path, scale=(1.0, 1.0))


def test_a_large_face_turned_upright_is_shrunk_without_aliasing():
    import cv2

    from ferkit.inference.faces import VERIFY_SIZE, _upright_region

    stripes = np.zeros((1200, 1600, 3), np.uint8)
    stripes[:, ::2] = 255  # 2-px stripes: any sampling without averaging turns them into bands
    out = _upright_region(stripes, 800, 600, 900, 20)
    assert out.shape == (VERIFY_SIZE, VERIFY_SIZE, 3) and abs(out.mean() - 127.5) < 10 and out.std() < 12
    # The geometry is the plain warp's: on a smooth image the two agree, near an edge too (mirrored).
    yy, xx = np.mgrid[0:1200, 0:1600]
    smooth = np.dstack([xx * 255 // 1600, yy * 255 // 1200, (xx + yy) * 255 // 2800]).astype(np.uint8)
    for cx, cy in [(800, 600), (300, 250)]:
        m = cv2.getRotationMatrix2D((cx, cy), 20, VERIFY_SIZE / 900)
        m[:, 2] += VERIFY_SIZE / 2 - np.array([cx, cy])
        plain = cv2.warpAffine(smooth, m, (VERIFY_SIZE, VERIFY_SIZE), borderMode=cv2.BORDER_REFLECT)
        assert np.abs(_upright_region(smooth, cx, cy, 900, 20).astype(int) - plain).mean() < 2
