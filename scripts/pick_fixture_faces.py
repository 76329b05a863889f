"""Pick the bundled model's regression fixture: per class, the 2 PublicTest faces it is surest of.

python scripts/pick_fixture_faces.py ../shared/data/fer2013 tests/fixtures/faces
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

from ferkit.data.audit import image_hashes, in_other_split
from ferkit.data.load import load_dataset
from ferkit.inference.recognizer import Recognizer
from ferkit.labels import CLASSES


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("data", help="FER2013 (its PublicTest faces are picked from)")
    ap.add_argument("out", type=Path, help="the fixture folder, e.g. tests/fixtures/faces")
    args = ap.parse_args()
    data, out = args.data, args.out
    ds = load_dataset(data)
    pub = ds.split("PublicTest")
    fresh = ~in_other_split(ds, "PublicTest")  # not a copy of a Training image
    probs = Recognizer.load().predict_proba(list(pub.images))
    out.mkdir(parents=True, exist_ok=True)
    hashes = image_hashes(pub.images)
    first = np.zeros(len(pub), bool)
    first[np.unique(hashes, return_index=True)[1]] = True  # one image per group of identical ones
    for c, name in enumerate(CLASSES):
        idx = np.flatnonzero((pub.labels == c) & (probs.argmax(1) == c) & fresh & first)
        for rank, i in enumerate(idx[np.argsort(-probs[idx, c])][:2]):
            cv2.imwrite(str(out / f"{name}_{rank}.png"), pub.images[i])
            print(f"{name}_{rank}.png <- {pub.sources[i]} (p={probs[i, c]:.3f})")


if __name__ == "__main__":
    from ferkit.errors import run_script

    sys.exit(run_script(main))
