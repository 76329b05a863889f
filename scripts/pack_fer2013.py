"""Pack FER2013's three splits into one small file for the GPU machine (scripts/gpu_full_run.py).

    python scripts/pack_fer2013.py --data ../shared/data/fer2013            # -> gpu_data/fer2013.npz
    python scripts/pack_fer2013.py --data DATA --near-training 0            # lossless everywhere

Only the repository's working tree travels to the GPU machine, 64 MiB in all with the repository itself
(about 18 MB tracked, 13 MB of it the bundled model), so the data must be small. Each split is one
lossless WebP mosaic (OpenCV): 56.1 MB for FER2013's 82.7 MB of pixels (PNG: 59.3 MB), too much beside
the repository, so by default (``--near-training auto``) the Training split is binned by 3 grey levels
first when lossless does not fit: every Training pixel within +-1 grey level of the original, 32.5 MB,
while PublicTest and PrivateTest, which select and report, stay bit-exact: about 43.7 MB in all. When
even that does not fit (a run's checkpoints committed to continue it, say), Training is binned by 5
(within +-2).
``in_training`` masks (PublicTest/PrivateTest rows pixel-identical to a Training row, from the exact
data) travel with them, so the "without Training duplicates" figures stay exact too.

The file is a plain ``np.savez`` (no pickle); ``load_pack`` checks each split's sha256 after decoding.
The packer also fetches the wheels the GPU machine lacks (its image has scikit-learn but not
imbalanced-learn and its sklearn-compat, which ``balance=smote`` needs) into ``gpu_data/wheels``, and adds
``/gpu_data/`` to ``.git/info/exclude``, so the folder travels only when the run tool's ``carry`` names it.
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ferkit.data.audit import in_other_split
from ferkit.data.dataset import SPLITS, FaceDataset
from ferkit.errors import DataError, FerkitError

FORMAT = "ferkit-fer2013-pack"
TRAVEL_LIMIT = 64 * 2**20  # the run tool's working-tree limit
MARGIN = 2 * 2**20  # room left for the repository to grow
ROOT = Path(__file__).resolve().parents[1]


def _sha(images: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(images, dtype=np.uint8).tobytes()).hexdigest()


COLUMNS = 256  # faces per mosaic row (WebP's side limit is 16,383 pixels: 341 faces)


def _mosaic(images: np.ndarray) -> np.ndarray:
    n, h, w = images.shape
    rows = max(1, -(-n // COLUMNS))
    pad = np.zeros((rows * COLUMNS, h, w), np.uint8)
    pad[:n] = images
    return pad.reshape(rows, COLUMNS, h, w).transpose(0, 2, 1, 3).reshape(rows * h, COLUMNS * w)


def _faces(mosaic: np.ndarray, n: int, h: int, w: int) -> np.ndarray:
    rows = mosaic.shape[0] // h
    return mosaic.reshape(rows, h, COLUMNS, w).transpose(0, 2, 1, 3).reshape(-1, h, w)[:n].copy()


def encode(images: np.ndarray, delta: int = 0) -> dict[str, np.ndarray]:
    """uint8 (n, H, W) -> the arrays ``decode`` needs: one lossless WebP mosaic (OpenCV); with ``delta``
    > 0 the pixels are first binned by 2 * delta + 1 grey levels, so each decodes within ``delta``."""
    n, h, w = images.shape
    step = 2 * delta + 1
    binned = ((images.astype(np.int16) + delta) // step).astype(np.uint8)
    ok, buf = cv2.imencode(".webp", _mosaic(binned), [cv2.IMWRITE_WEBP_QUALITY, 101])  # >100: lossless
    if not ok:
        raise DataError("OpenCV could not encode the WebP mosaic")
    fields = {"shape": np.array([n, h, w], np.int64), "delta": np.array(delta, np.int64), "webp": buf}
    return {**fields, "sha256": np.array(_sha(_unbin(binned, delta)))}


def _unbin(binned: np.ndarray, delta: int) -> np.ndarray:
    return np.minimum(binned.astype(np.int16) * (2 * delta + 1), 255).astype(np.uint8)


def decode(fields: dict[str, np.ndarray]) -> np.ndarray:
    """The images ``encode`` packed (checked against their sha256); DataError when they do not match."""
    n, h, w = (int(v) for v in fields["shape"])
    mosaic = cv2.imdecode(fields["webp"], cv2.IMREAD_GRAYSCALE)
    if mosaic is None:
        raise DataError("packed data: the WebP mosaic does not decode (a damaged pack?)")
    images = _unbin(_faces(mosaic, n, h, w), int(fields["delta"]))
    if _sha(images) != str(fields["sha256"]):
        raise DataError("packed data: the decoded images do not match their checksum (a damaged pack?)")
    return images


def pack(dataset: FaceDataset, deltas: dict[str, int]) -> dict[str, np.ndarray]:
    """Everything ``np.savez`` writes: each split's codes and labels, and the test splits' duplicate masks."""
    out: dict[str, np.ndarray] = {"format": np.array(FORMAT), "version": np.array(1)}
    for split in SPLITS:
        part = dataset.split(split)
        for k, v in encode(part.images, deltas.get(split, 0)).items():
            out[f"{split}.{k}"] = v
        out[f"{split}.labels"] = part.labels.astype(np.uint8)
        if split != "Training":
            out[f"{split}.in_training"] = in_other_split(dataset, split)  # on the exact pixels
    return out


@dataclass
class Pack:
    """What ``load_pack`` returns: the dataset, its test rows duplicated in Training, per-split fidelity."""

    dataset: FaceDataset
    in_training: dict[str, np.ndarray]
    max_error: dict[str, int]  # 0: bit-exact; d: every pixel within d grey levels of the original


def load_pack(path: str | Path) -> Pack:
    """Read and decode a pack; DataError (one line) when it is missing, not a pack, or damaged."""
    p = Path(path)
    if not p.is_file():
        raise DataError(
            f"packed data not found: {p} (make it with: python scripts/pack_fer2013.py --data DATA)"
        )
    try:
        with np.load(p, allow_pickle=False) as z:
            fields = {k: z[k] for k in z.files}
    except Exception as e:  # noqa: BLE001 - zip and numpy raise assorted types on a bad file
        raise DataError(f"{p} is not a readable pack ({type(e).__name__}: {e})") from None
    if str(fields.get("format", "")) != FORMAT:
        raise DataError(f"{p} is not a ferkit FER2013 pack")
    parts, dups, errors = [], {}, {}
    for split in SPLITS:
        sub = {k.split(".", 1)[1]: v for k, v in fields.items() if k.startswith(split + ".")}
        images, labels = decode(sub), sub["labels"].astype(np.int64)
        parts.append(FaceDataset(images, labels, np.array([split] * len(labels), dtype=object)))
        errors[split] = int(sub["delta"])
        if "in_training" in sub:
            dups[split] = sub["in_training"].astype(bool)
    return Pack(FaceDataset.concat(parts), dups, errors)


def travel_bytes() -> int:
    """Bytes of the working tree the run tool sends: tracked files and untracked files git does not ignore."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    files = {ROOT / f for f in listed.decode().split("\0") if f}
    return sum(f.stat().st_size for f in files if f.is_file() and not f.is_symlink())


# What the GPU machine's image lacks for balance=smote (it has numpy, scipy, scikit-learn and joblib).
WHEELS = ("imbalanced-learn", "sklearn-compat")


def fetch_wheels(folder: Path) -> None:
    """The wheels of ``WHEELS`` (the versions installed here; pure Python) for the GPU machine."""
    from importlib.metadata import version

    folder.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:"]
    cmd += ["--python-version", "3.12", "--implementation", "cp", "-d", str(folder)]
    subprocess.run([*cmd, *(f"{name}=={version(name)}" for name in WHEELS)], check=True)


def exclude_folder(folder: Path) -> None:
    """List ``folder`` in .git/info/exclude (local to this clone), so it travels only when carried."""
    entry = "/" + folder.resolve().relative_to(ROOT).as_posix() + "/"
    exclude = ROOT / ".git" / "info" / "exclude"
    if exclude.parent.is_dir():
        lines = exclude.read_text().splitlines() if exclude.exists() else []
        if entry not in lines:
            exclude.write_text("\n".join([*lines, entry]) + "\n")


def check_round_trip(dataset: FaceDataset, back: Pack) -> None:
    """DataError unless ``back`` holds ``dataset``'s labels, and its pixels within each split's bound."""
    for split in SPLITS:
        a, b = dataset.split(split), back.dataset.split(split)
        err = int(np.abs(a.images.astype(int) - b.images).max()) if len(a) else 0
        if err > back.max_error[split] or not np.array_equal(a.labels, b.labels):
            raise DataError(f"pack round trip failed on {split} (max error {err})")
        if split in back.in_training and not np.array_equal(
            back.in_training[split], in_other_split(dataset, split)
        ):
            raise DataError(f"pack round trip failed on {split}'s duplicate mask")


def _write(fields: dict[str, np.ndarray], out: Path) -> None:
    if out.is_dir():
        raise DataError(f"--out {out} is a folder; give a file name such as {out / 'fer2013.npz'}")
    from ferkit.io import atomic_write

    atomic_write(out, lambda f: np.savez(f, **fields))  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="FER2013: the Kaggle CSV or the class folders")
    ap.add_argument("--out", default=str(ROOT / "gpu_data" / "fer2013.npz"))
    ap.add_argument("--near-training", default="auto", choices=["auto", "0", "1", "2"])
    ap.add_argument("--no-wheel", action="store_true", help="do not fetch the wheels the GPU machine lacks")
    args = ap.parse_args(argv)
    from ferkit.data.load import load_dataset

    try:
        out, t0 = Path(args.out), time.time()
        dataset = load_dataset(args.data)
        near = [0, 1, 2] if args.near_training == "auto" else [int(args.near_training)]
        for d in near:  # lossless first under "auto"; Training within +-1, then +-2, while it does not fit
            _write(pack(dataset, {"Training": d}), out)
            size, left = out.stat().st_size, TRAVEL_LIMIT - MARGIN - travel_bytes()
            print(f"packed {len(dataset)} images, Training within +-{d}: {size / 1e6:.1f} MB ", end="")
            print(f"({left / 1e6:.1f} MB fit beside the repository's tree)")
            if size <= left:
                break
        if out.resolve().is_relative_to(ROOT):
            exclude_folder(out.parent)
            if not args.no_wheel:
                fetch_wheels(out.parent / "wheels")
        check_round_trip(dataset, load_pack(out))  # decoded as the GPU machine will decode it
        print(f"checked the round trip in {time.time() - t0:.0f} s in all: {out}")
    except (FerkitError, subprocess.CalledProcessError, OSError) as e:  # OSError: an unwritable --out
        print(f"pack_fer2013: error: {e}", file=sys.stderr)
        return getattr(e, "exit_code", 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
