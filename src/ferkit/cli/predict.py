"""``ferkit predict``: faces and expressions in images, folders and videos -> JSON lines or CSV.

One row per face: source, frame and time (videos), box, label, score and the seven probabilities in the
fixed class order. ``--annotate DIR`` also writes the images/videos with boxes and labels drawn.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from ferkit.errors import FerkitError, InputError
from ferkit.runtime import TTA_MODES

BATCH_IMAGES = 32  # images whose crops go through the engine in one call


def add_model_args(p: argparse.ArgumentParser) -> None:
    """Model and face-detection options shared by ``predict`` and ``serve``."""
    from ferkit.inference.faces import DEFAULT_MARGIN, DETECTORS

    g = p.add_argument_group("model and faces")
    g.add_argument("--model", default=None,
                   help="checkpoint (.pt), ensemble or .onnx file (default: the bundled model)")
    g.add_argument("--backend", default="auto", choices=["auto", "onnx", "torch"], help="inference engine")
    g.add_argument("--tta", default=None, choices=TTA_MODES,
                   help="test-time crops (default: the model's own; an .onnx file has its crops built in)")
    g.add_argument("--threads", type=int, default=None,
                   help="engine threads (0 or unset: all cores; serve defaults to 1 per request)")
    g.add_argument("--detector", default="haar", choices=list(DETECTORS),
                   help="face detector: haar (built in) or yunet (needs --yunet-model)")
    g.add_argument("--yunet-model", default=None, metavar="PATH", help="YuNet ONNX file for --detector yunet")
    g.add_argument("--margin", type=float, default=DEFAULT_MARGIN,
                   help="fraction of the face box added on each side of the square crop (default %(default)s)")
    g.add_argument("--detect-size", type=int, default=640, metavar="PX",
                   help="longer side images are shrunk to before detection (0: full size; default %(default)s)")


def load_analyzer(args: argparse.Namespace):
    """Recognizer (loaded once) + detector from the options of ``add_model_args``."""
    from ferkit import Recognizer
    from ferkit.inference.faces import FaceAnalyzer, create_detector

    if not 0.0 <= args.margin <= 1.0:
        raise InputError(f"--margin must be between 0 and 1, got {args.margin}")
    detector = create_detector(args.detector, args.yunet_model, max_side=args.detect_size or None)
    rec = Recognizer.load(args.model, backend=args.backend, threads=args.threads, tta=args.tta)
    return FaceAnalyzer(rec, detector, margin=args.margin)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="find faces in images, folders or videos and classify their expressions",
                       description="Find every face in images, folders (recursively) or video files, classify "
                                   "its expression, and write one JSON line (or CSV row) per face.")
    p.add_argument("inputs", nargs="+", help="image files, folders or video files")
    add_model_args(p)
    p.add_argument("--face-crops", action="store_true",
                   help="each image already is a cropped face: no detection, the whole image is classified")
    p.add_argument("--format", default="jsonl", choices=["jsonl", "csv"], help="output format")
    p.add_argument("-o", "--output", default="-", help="output file (default: standard output)")
    p.add_argument("--annotate", default=None, metavar="DIR", help="also write annotated images/videos here")
    p.add_argument("--every", type=int, default=1, metavar="N", help="videos: analyse every N-th frame")
    p.add_argument("--smooth", type=float, default=0.4, metavar="ALPHA",
                   help="videos: weight of the newest frame in the per-face moving average (1: no smoothing)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def collect_inputs(paths: list[str]) -> list[tuple[Path, Path, str]]:
    """(file, folder it was found under, kind) for every image/video, folders walked recursively, sorted."""
    from ferkit.data.images import IMAGE_EXTENSIONS
    from ferkit.inference.video import VIDEO_EXTENSIONS

    def kind(p: Path) -> str | None:
        ext = p.suffix.lower()
        return "image" if ext in IMAGE_EXTENSIONS else "video" if ext in VIDEO_EXTENSIONS else None

    out = []
    for s in paths:
        p = Path(s)
        if p.is_dir():
            for f in sorted(q for q in p.rglob("*") if q.is_file()):
                if kind(f):
                    out.append((f, p, kind(f)))
        elif p.is_file():
            out.append((p, p.parent, kind(p) or "image"))  # named explicitly: try it as an image
        else:
            raise InputError(f"input not found: {p}")
    if not out:
        raise InputError(f"no images or videos found in {', '.join(paths)}")
    return out


class RowWriter:
    """One row per face as JSON lines or CSV with fixed columns."""

    def __init__(self, stream: TextIO, fmt: str, classes: list[str]) -> None:
        self.stream, self.fmt, self.classes = stream, fmt, classes
        self.columns = ["source", "frame", "time", "face", "x", "y", "w", "h", "label", "score", *classes]
        self._csv = None
        if fmt == "csv":
            self._csv = csv.writer(stream)
            self._csv.writerow(self.columns)
        self.count = 0

    def write(self, source: str, faces: list, frame: int | None = None, time: float | None = None) -> None:
        for k, f in enumerate(faces):
            label, score = f.label_score(self.classes)
            if self._csv is not None:
                self._csv.writerow([source, "" if frame is None else frame, "" if time is None else f"{time:.3f}", k,
                                    *f.box.to_list(), label, f"{score:.6f}", *(f"{float(p):.6f}" for p in f.probs)])
            else:
                row: dict[str, Any] = {"source": source}
                if frame is not None:
                    row.update(frame=frame, time=round(time or 0.0, 3))
                if f.track is not None:
                    row["track"] = f.track
                row.update(face=k, box=f.box.to_list(), label=label, score=round(score, 6),
                           probs={c: round(float(p), 6) for c, p in zip(self.classes, f.probs)})
                self.stream.write(json.dumps(row) + "\n")
            self.count += 1


def _batches(items: list, n: int) -> Iterator[list]:
    for i in range(0, len(items), n):
        yield items[i:i + n]


def _annotated_path(out_dir: Path, path: Path, root: Path, suffix: str | None = None) -> Path:
    try:
        rel = path.relative_to(root)
    except ValueError:
        rel = Path(path.name)
    return out_dir / (rel.with_suffix(suffix) if suffix else rel)


def _predict_images(items, analyzer, writer, args, progress, warn) -> int:
    from ferkit.data.images import read_image
    from ferkit.inference.annotate import draw_faces
    from ferkit.inference.recognizer import prepare_faces

    done = 0
    for batch in _batches(items, BATCH_IMAGES):
        loaded = []
        for path, root, _ in batch:
            try:
                image = read_image(path)
                if args.face_crops:  # check each crop here, so one bad file does not sink its batch
                    prepare_faces([image])
                loaded.append((path, root, image))
            except InputError as e:
                warn(f"skipped {e}" if str(path) in str(e) else f"skipped {path}: {e}")
        images = [im for _, _, im in loaded]
        if args.face_crops:
            per_image = [[f] for f in analyzer.classify_crops(images)]
        else:
            per_image = analyzer.analyze_many(images)
        for (path, root, image), faces in zip(loaded, per_image):
            writer.write(str(path), faces)
            if args.annotate:
                _write_image(_annotated_path(Path(args.annotate), path, root),
                             draw_faces(image, faces, analyzer.classes))
            done += 1
        progress.update(len(batch))
    return done


def _write_image(path: Path, rgb) -> None:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() not in (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"):
        path = path.with_suffix(".png")
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise InputError(f"cannot write {path}")


def _predict_video(path: Path, root: Path, analyzer, writer, args, tqdm) -> None:
    from ferkit.inference.annotate import draw_faces
    from ferkit.inference.smoothing import FaceSmoother
    from ferkit.inference.video import VideoReader, VideoWriter

    smoother = FaceSmoother(alpha=args.smooth)
    with VideoReader(path) as reader:
        out = None
        if args.annotate:
            out = VideoWriter(_annotated_path(Path(args.annotate), path, root, ".mp4"), reader.info.fps,
                              (reader.info.width, reader.info.height))
        faces: list = []
        bar = tqdm(total=reader.info.frames or None, desc=path.name, unit="frame", leave=False,
                   disable=args.no_progress or None, file=sys.stderr)
        try:
            for i, t, frame, due in reader.frames(args.every, all_frames=out is not None):
                if due:
                    faces = smoother.update(analyzer.analyze(frame))
                    writer.write(str(path), faces, frame=i, time=t)
                if out is not None:
                    if (frame.shape[1], frame.shape[0]) != (reader.info.width, reader.info.height):
                        raise InputError(f"{path}: frame size changes mid-video")
                    out.write(draw_faces(frame, faces, analyzer.classes))
                bar.update(1)
        finally:
            bar.close()
            if out is not None:
                out.close()


@contextlib.contextmanager
def _open_output(path: str) -> Iterator[TextIO]:
    if path == "-":
        yield sys.stdout
    else:
        with open(path, "w", newline="") as f:
            yield f


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    if args.every < 1:
        raise InputError(f"--every must be at least 1, got {args.every}")
    if not 0.0 < args.smooth <= 1.0:
        raise InputError(f"--smooth must be in (0, 1], got {args.smooth}")
    items = collect_inputs(args.inputs)
    images = [it for it in items if it[2] == "image"]
    videos = [it for it in items if it[2] == "video"]
    if videos and args.face_crops:
        raise InputError("--face-crops applies to images, not videos")
    if args.output != "-" and not Path(args.output).resolve().parent.is_dir():
        raise InputError(f"cannot write {args.output}: folder {Path(args.output).parent} does not exist")
    analyzer = load_analyzer(args)
    problems: list[str] = []

    def warn(msg: str) -> None:
        problems.append(msg)
        tqdm.write(f"ferkit: warning: {msg}", file=sys.stderr)

    n_images = n_videos = 0
    with _open_output(args.output) as stream:
        writer = RowWriter(stream, args.format, analyzer.classes)
        if images:
            with tqdm(total=len(images), desc="images", unit="img", disable=args.no_progress or None,
                      file=sys.stderr) as bar:
                n_images = _predict_images(images, analyzer, writer, args, bar, warn)
        for path, root, _ in videos:
            try:
                _predict_video(path, root, analyzer, writer, args, tqdm)
                n_videos += 1
            except InputError as e:
                warn(f"skipped {e}")
        stream.flush()
    print(f"ferkit: {writer.count} face(s) in {n_images} image(s) and {n_videos} video(s)"
          + (f"; {len(problems)} input(s) skipped" if problems else ""), file=sys.stderr)
    if problems:
        raise FerkitError(f"{len(problems)} of {len(items)} input(s) could not be read (see warnings above)")
    return 0
