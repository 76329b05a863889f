"""Issue 14: hostile inputs to the decode path, the dataset loader and ``ferkit predict``.

Every input is generated here: bomb-like JPEGs (tiny files declaring huge sizes), corrupt EXIF, special
files, sparse huge files, 16-bit and other pixel formats, and write failures.
"""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
import threading
import warnings

import numpy as np
import pytest
from media import jpeg_declaring, jpeg_with_corrupt_exif
from PIL import Image

from ferkit.cli import main
from ferkit.data import images
from ferkit.data.cache import fingerprint
from ferkit.data.folders import load_folders
from ferkit.data.images import decode_image, load_image, pil_to_array, read_image
from ferkit.errors import DataError, InputError
from ferkit.io import atomic_write_text

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# The process's own peak RSS in kB. Not ru_maxrss: Linux keeps that across exec, so a child forked from
# a big pytest process starts with the parent's figure.
PEAK_RSS_KB = "int(next(x for x in open('/proc/self/status') if x.startswith('VmHWM')).split()[1])"


def _peak_rss_mb(code: str) -> float:
    """Peak RSS (MB) a fresh interpreter adds by running ``code`` after importing ferkit's decoder."""
    prog = (
        "import numpy, cv2, PIL.Image, ferkit.data.images as I\n"
        f"r0 = {PEAK_RSS_KB}\n" + code + f"\nprint(({PEAK_RSS_KB} - r0) / 1024)"
    )
    out = subprocess.run(
        [sys.executable, "-c", prog], capture_output=True, text=True, timeout=120, check=True
    )
    return float(out.stdout.split()[-1])


# --- item 1: memory scales with the declared size -------------------------------------------------


def test_bomb_like_jpeg_is_decoded_reduced_in_bounded_memory(tmp_path):
    path = tmp_path / "big.jpg"
    path.write_bytes(jpeg_declaring(7000, 7000))
    loaded = load_image(path)
    assert max(loaded.pixels.shape[:2]) == images.MAX_DECODE_SIDE and loaded.size == (7000, 7000)
    assert loaded.scale == pytest.approx((7000 / 2048, 7000 / 2048))
    # Full size it is 147 MB of pixels and ~650 MB peak; reduced it stays well under that.
    assert _peak_rss_mb(f"I.load_image({str(path)!r})") < 200


def test_predict_streams_a_folder_of_bombs_in_bounded_memory(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    for i in range(4):
        (d / f"b{i}.jpg").write_bytes(jpeg_declaring(7000, 7000))
    prog = (
        "import sys\nfrom ferkit.cli import main\n"
        f"rc = main(['predict', {str(d)!r}, '--no-progress', '-o', {str(tmp_path / 'o.jsonl')!r}])\n"
        f"print(rc, {PEAK_RSS_KB} / 1024)"
    )
    out = subprocess.run(
        [sys.executable, "-c", prog],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"},
    )
    rc, peak = out.stdout.split()[-2:]
    assert rc == "0", out.stderr
    # before: ~650 MB per image, 4 at once
    assert float(peak) < 700, f"peak RSS {peak} MB for 4 bomb-like JPEGs"


def test_boxes_are_reported_in_full_size_pixels():
    from media import scene

    from ferkit.inference.faces import Box, Face, decode_side, scale_faces

    img, _ = scene(1)
    big = np.asarray(Image.fromarray(img).resize((640 * 5, 480 * 5)))
    buf = io.BytesIO()
    Image.fromarray(big).save(buf, "JPEG")
    loaded = load_image(buf.getvalue(), max_side=decode_side(640))
    assert loaded.pixels.shape[:2] == (1536, 2048) and loaded.size == (3200, 2400)
    f = Face(Box(100, 50, 40, 40), Box(90, 40, 60, 60), np.zeros((48, 48), np.uint8))
    [g] = scale_faces([f], *loaded.scale)
    assert g.box.to_list() == [156, 78, 62, 62]


# --- item 2: corrupt EXIF -------------------------------------------------------------------------


def test_corrupt_exif_is_ignored_with_a_note():
    loaded = load_image(jpeg_with_corrupt_exif(), "x.jpg")
    assert loaded.pixels.shape[:2] == (10, 20)  # orientation not applied, pixels as they are
    assert len(loaded.notes) == 1 and "x.jpg: EXIF data unreadable" in loaded.notes[0]
    assert decode_image(jpeg_with_corrupt_exif()).shape[:2] == (10, 20)


def test_predict_folder_with_corrupt_exif_keeps_going(tmp_path, capsys):
    from media import encode, scene

    d = tmp_path / "in"
    d.mkdir()
    (d / "a_bad_exif.jpg").write_bytes(jpeg_with_corrupt_exif())
    (d / "b_face.jpg").write_bytes(encode(scene(1)[0]))
    rc = main(["predict", str(d), "--no-progress", "-o", str(tmp_path / "o.jsonl")])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "EXIF data unreadable" in err and "internal error" not in err
    rows = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert [r["source"] for r in rows] == [str(d / "b_face.jpg")]


# --- item 3: one guarded decode path, the dataset loader included ---------------------------------


def _class_folders(root, n=3):
    for c in ("happy", "sad"):
        (root / c).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(np.full((60, 50), 40 * i + 20, np.uint8)).save(root / c / f"{i}.png")
    return root


def test_dataset_loader_honours_the_pixel_limit(tmp_path, monkeypatch):
    root = _class_folders(tmp_path / "ds")
    Image.fromarray(np.zeros((200, 200), np.uint8)).save(root / "happy" / "huge.png")
    monkeypatch.setattr(images, "MAX_PIXELS", 100 * 100)  # the 200x200 file plays a 30000x30000 one
    with pytest.raises(DataError, match=r"huge\.png: image too large \(200x200 pixels"):
        load_folders(root, cache=False)
    ds = load_folders(root, cache=False, skip_bad=True)
    assert len(ds) == 6 and ds.skipped == {"unreadable image": 1}


def test_dataset_loader_scales_16_bit_images(tmp_path):
    root = _class_folders(tmp_path / "ds", n=1)
    Image.fromarray(np.full((48, 48), 32768, np.uint16)).save(root / "sad" / "deep.png")
    ds = load_folders(root, cache=False)
    [i] = [k for k, s in enumerate(ds.sources) if s.endswith("deep.png")]
    assert int(ds.images[i].mean()) == 128  # clipped, it was 255


# --- item 4: special files ------------------------------------------------------------------------


def test_special_files_are_skipped_and_counted(tmp_path):
    root = _class_folders(tmp_path / "ds")
    os.mkfifo(root / "happy" / "x.png")
    os.symlink("loop.png", root / "happy" / "loop.png")
    os.symlink("missing.png", root / "sad" / "broken.png")
    os.symlink("..", root / "sad" / "up")  # a folder loop
    fingerprint(root)  # must not raise nor loop
    result: dict = {}
    t = threading.Thread(target=lambda: result.update(ds=load_folders(root)), daemon=True)
    t.start()
    t.join(60)
    assert not t.is_alive(), "the loader blocked on a FIFO"
    ds = result["ds"]
    assert len(ds) == 6 and ds.skipped == {"not a regular file": 3}


def test_readers_refuse_non_regular_files_without_blocking(tmp_path):
    fifo = tmp_path / "x.png"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="not a regular file"):
        read_image(fifo)
    with pytest.raises(InputError, match="not a regular file"):
        read_image(tmp_path)
    os.symlink("loop.png", tmp_path / "loop.png")
    with pytest.raises(InputError, match="loop.png: cannot open"):
        read_image(tmp_path / "loop.png")


# --- item 5: size checked before reading ----------------------------------------------------------


def test_huge_file_is_refused_before_it_is_read(tmp_path, capsys):
    big = tmp_path / "big.jpg"
    with open(big, "wb") as f:  # sparse: 3 GB declared, nothing on disk
        f.write(b"\xff\xd8\xff")
        f.truncate(3 * 2**30)
    with pytest.raises(InputError, match=r"big\.jpg: file is 3072 MB; the limit is 100 MB \(--max-file-mb\)"):
        read_image(big)
    small = tmp_path / "small.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 300), np.uint8)).save(small)
    assert (
        main(
            [
                "predict",
                str(small),
                "--max-file-mb",
                "0.001",
                "--no-progress",
                "-o",
                str(tmp_path / "o.jsonl"),
            ]
        )
        == 1
    )
    assert "the limit is 1048 bytes (--max-file-mb)" in capsys.readouterr().err
    assert (
        _peak_rss_mb(f"""
try:
    I.read_image({str(big)!r})
except Exception:
    pass""")
        < 50
    )


def test_data_commands_take_max_file_mb(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(images, "MAX_FILE_BYTES", images.MAX_FILE_BYTES)  # restored after the CLI sets it
    root = _class_folders(tmp_path / "ds")
    tiny = ["--max-file-mb", "0.00001", "--no-cache", "--val-fraction", "0"]
    assert main(["data", "stats", str(root), *tiny]) == 3
    assert "the limit is 10 bytes (--max-file-mb)" in capsys.readouterr().err
    assert main(["data", "stats", str(root), *tiny, "--skip-bad"]) == 0
    assert "unreadable image: 6" in capsys.readouterr().out
    assert main(["data", "stats", str(root), "--max-file-mb", "1", "--no-cache", "--val-fraction", "0"]) == 0


# --- item 6: bit depths and modes -----------------------------------------------------------------


def _roundtrip(im: Image.Image, fmt: str) -> np.ndarray:
    buf = io.BytesIO()
    im.save(buf, fmt)
    return decode_image(buf.getvalue())


def test_16_bit_images_are_scaled_not_clipped():
    ramp = np.tile(np.linspace(0, 65535, 256), (4, 1)).round().astype(np.uint16)
    for fmt in ("PNG", "TIFF", "PPM"):
        out = _roundtrip(Image.fromarray(ramp), fmt)
        assert out.dtype == np.uint8 and out.min() == 0 and out.max() == 255, fmt
        assert abs(int(out[0, 128]) - 128) <= 1, fmt  # clipped, it was 255
        assert (out == 255).mean() < 0.01, fmt
    # a PGM with maxval 4095 (12-bit): Pillow stretches it to 16 bits, ferkit to 8
    pgm = b"P5 2 1 4095\n" + np.array([0, 4095], ">u2").tobytes()
    assert decode_image(pgm).tolist() == [[0, 255]]
    i16 = Image.frombytes("I;16", (2, 1), np.array([0, 65535], "<u2").tobytes())
    assert pil_to_array(i16).tolist() == [[0, 255]]


def test_other_modes_convert_by_their_meaning():
    one = Image.fromarray(np.array([[0, 1]], bool))
    assert _roundtrip(one, "PNG").tolist() == [[0, 255]]
    pal = Image.new("P", (2, 1))
    pal.putpalette([10, 20, 30, 200, 210, 220] + [0] * 762)
    pal.putpixel((1, 0), 1)
    pal.info["transparency"] = 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "Palette images with Transparency" warning either
        out = _roundtrip(pal, "PNG")
    assert out.shape == (1, 2, 4) and out[0, 0].tolist() == [10, 20, 30, 0] and out[0, 1, 3] == 255
    cmyk = Image.new("CMYK", (2, 2), (0, 0, 0, 0))  # no ink: white
    assert (_roundtrip(cmyk, "JPEG") > 240).all()
    la = Image.fromarray(np.array([[[100, 255], [200, 0]]], np.uint8), "LA")
    assert _roundtrip(la, "PNG").tolist() == [[100, 200]]


# --- item 10: write failures ----------------------------------------------------------------------


def test_unwritable_outputs_are_one_clear_line(tmp_path, capsys):
    img = tmp_path / "a.png"
    Image.fromarray(np.zeros((50, 50, 3), np.uint8)).save(img)
    a_file = tmp_path / "file"
    a_file.write_text("x")
    cases = [
        (["-o", "/proc/x.jsonl"], 74, "cannot write /proc/x.jsonl"),
        (["-o", str(a_file / "x.jsonl")], 5, "does not exist"),
        (["--annotate", str(a_file)], 5, "not a folder (it is an existing file)"),
        (["--annotate", str(a_file / "sub")], 74, "cannot write"),
    ]
    for extra, code, words in cases:
        out = tmp_path / "o.jsonl"
        args = extra if "-o" in extra else ["-o", str(out), *extra]
        rc = main(["predict", str(img), "--no-progress", *args])
        err = capsys.readouterr().err
        assert rc == code, (extra, err)
        assert words in err and "internal error" not in err and len(err.strip().splitlines()) == 1, err
        assert not out.exists()  # nothing half-written
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_file_size_limit_while_saving_is_a_clear_error(tmp_path):
    """RLIMIT_FSIZE: torch.save (checkpoints) and annotated images fail with the disk's reason, and leave
    neither the target nor a temporary file behind."""
    img = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (400, 400, 3), np.uint8)).save(img)
    prog = f"""
import resource, sys, torch
from ferkit.io import atomic_write
from ferkit.cli import main
resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
try:
    atomic_write({str(tmp_path / "ck.pt")!r}, lambda f: torch.save({{"w": torch.zeros(100_000)}}, f))
except OSError as e:
    print("SAVE", e.strerror)
sys.exit(main(["predict", {str(img)!r}, "--no-progress", "--annotate", {str(tmp_path / "ann")!r},
               "-o", {str(tmp_path / "o.jsonl")!r}]))
"""
    out = subprocess.run(
        [sys.executable, "-c", prog],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"},
    )
    assert f"SAVE cannot write {tmp_path / 'ck.pt'}: File too large" in out.stdout
    assert out.returncode == 74, out.stderr
    assert "ferkit: error: cannot write" in out.stderr and "File too large" in out.stderr
    assert "internal error" not in out.stderr
    left = [p.name for p in tmp_path.rglob("*") if p.is_file()]
    assert sorted(left) == ["a.png"], left


# --- item 12: messages ----------------------------------------------------------------------------


def test_messages_name_the_input_once_and_no_python_reprs(tmp_path):
    with pytest.raises(InputError) as e:
        decode_image(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "up.png")
    assert "object at 0x" not in str(e.value) and str(e.value).startswith("up.png: not a readable image")
    bad = tmp_path / "happy"
    bad.mkdir()
    (bad / "x.png").write_bytes(b"not a png")
    with pytest.raises(DataError) as e:
        load_folders(tmp_path, cache=False)
    assert str(e.value).count("x.png") == 1 and "object at 0x" not in str(e.value)


def test_output_to_a_device_or_through_a_link_never_replaces_it(tmp_path):
    from media import ASTRONAUT

    """`-o /dev/null` must not turn /dev/null into a regular file (an atomic rename over it would), and a
    link to a file stays a link while its target gets the output."""
    to_null = tmp_path / "null.jsonl"
    to_null.symlink_to("/dev/null")
    assert main(["predict", str(ASTRONAUT), "--no-progress", "-o", str(to_null)]) == 0
    assert to_null.is_symlink() and stat.S_ISCHR(os.stat("/dev/null").st_mode)
    target = tmp_path / "real.jsonl"
    link = tmp_path / "link.jsonl"
    link.symlink_to(target)
    assert main(["predict", str(ASTRONAUT), "--no-progress", "-o", str(link)]) == 0
    assert link.is_symlink() and '"label"' in target.read_text()
    atomic_write_text(to_null, "nothing")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
