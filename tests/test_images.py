"""Image decoding and conversion shared by loaders and inference."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from ferkit.data.images import decode_image, to_face_input, to_gray
from ferkit.errors import InputError


def test_exif_rotation_is_applied():
    im = Image.fromarray(np.zeros((10, 20, 3), np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to view": a phone photo taken upright
    buf = io.BytesIO()
    im.save(buf, "JPEG", exif=exif.tobytes())
    assert decode_image(buf.getvalue()).shape[:2] == (20, 10)


@pytest.mark.parametrize("shape", [(30, 40), (30, 40, 1), (30, 40, 3), (30, 40, 4)])
def test_any_layout_becomes_square_gray_48(shape):
    a = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    out = to_face_input(a)
    assert out.shape == (48, 48) and out.dtype == np.uint8


def test_float_images_in_unit_range_are_scaled():
    assert to_gray(np.full((4, 4), 1.0)).max() == 255


@pytest.mark.parametrize(
    "bad", [np.zeros((0, 0)), np.zeros((2, 2, 2, 2)), np.full((4, 4), np.nan), np.zeros((4, 4, 2))]
)
def test_malformed_arrays_are_refused(bad):
    with pytest.raises(InputError):
        to_gray(bad)


def test_non_image_bytes_are_refused():
    with pytest.raises(InputError, match="not a readable image"):
        decode_image(b"hello", name="x.txt")


def test_centre_crop_keeps_the_middle_of_each_face():
    from ferkit.data.images import centre_crop

    faces = np.zeros((2, 48, 48), np.uint8)
    faces[:, 12:36, 12:36] = 200  # a centred square half the side
    out = centre_crop(faces, 0.5)
    assert out.shape == faces.shape and out.dtype == np.uint8
    assert (out[:, 2:-2, 2:-2] == 200).all()  # the square now fills the face
    assert np.array_equal(centre_crop(faces, 1.0), faces)
    wide = centre_crop(faces, 0.8)
    assert (wide[:, 0, :] == 0).all() and wide[0, 24, 24] == 200  # a border still shows at 0.8
    for bad in (0.0, 1.5, -0.2):
        with pytest.raises(InputError):
            centre_crop(faces, bad)
    for shape in ((2, 48, 48, 1), (2, 48, 40)):  # not (N, S, S): refused, not reshaped
        with pytest.raises(InputError, match="square"):
            centre_crop(np.zeros(shape, np.uint8), 0.8)
