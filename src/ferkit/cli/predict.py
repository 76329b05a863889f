"""``ferkit predict``: faces and expressions in images, folders and videos -> JSON lines or CSV.

One row per face: source, frame and time (videos), box, label, score and the seven probabilities in the
fixed class order. ``--annotate DIR`` also writes the images/videos with boxes and labels drawn. Videos
are followed between detections (``ferkit.inference.tracking``); ``--summary`` and ``--timeline`` report
each face track.
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
# Decoded pixels held at once (for --annotate / --face-crops) before a batch is flushed: a folder of huge
# images streams through in bounded memory.
PENDING_BYTES = 64 * 2**20


def add_model_args(p: argparse.ArgumentParser) -> None:
    """Model and face-detection options shared by ``predict`` and ``serve``."""
    from ferkit.inference.faces import DEFAULT_DETECTOR, DEFAULT_MARGIN, DETECTORS

    g = p.add_argument_group("model and faces")
    g.add_argument(
        "--model", default=None, help="checkpoint (.pt), ensemble or .onnx file (default: the bundled model)"
    )
    g.add_argument("--backend", default="auto", choices=["auto", "onnx", "torch"], help="inference engine")
    g.add_argument(
        "--tta",
        default=None,
        choices=TTA_MODES,
        help="test-time crops (default: the model's own; an .onnx file has its crops built in)",
    )
    g.add_argument(
        "--threads",
        type=int,
        default=None,
        help="engine threads (0 or unset: all cores; serve defaults to 1 per request)",
    )
    g.add_argument(
        "--detector",
        default=DEFAULT_DETECTOR,
        choices=list(DETECTORS),
        help="face detector: blazeface (bundled, with eye keypoints; default), haar (OpenCV's cascade) or "
        "yunet (needs --yunet-model)",
    )
    g.add_argument("--yunet-model", default=None, metavar="PATH", help="YuNet ONNX file for --detector yunet")
    g.add_argument(
        "--margin",
        type=float,
        default=DEFAULT_MARGIN,
        help="fraction of the face box added on each side of the square crop (default %(default)s)",
    )
    g.add_argument(
        "--detect-size",
        type=int,
        default=640,
        metavar="PX",
        help="longer side images are shrunk to before detection (0: full size; default %(default)s)",
    )


def add_face_args(p: argparse.ArgumentParser) -> None:
    """``predict``'s extra face options (BlazeFace network, smallest face, alignment)."""
    from ferkit.inference.faces import MIN_FACE

    g = p.add_argument_group("faces")
    g.add_argument(
        "--blazeface-model",
        default="auto",
        choices=["auto", "short", "full", "back"],
        help="BlazeFace network: auto (back-camera model, plus tiles for small faces in images of 512 px or "
        "more), short "
        "(webcam distance), full or back (default %(default)s)",
    )
    g.add_argument(
        "--min-face",
        type=int,
        default=MIN_FACE,
        metavar="PX",
        help="leave out faces smaller than this (pixels of the photo or frame; too coarse to read; photos "
        "over 2,048 px are read reduced to that size; default %(default)s)",
    )
    g.add_argument(
        "--no-align", action="store_true", help="do not turn faces upright by their eyes before cropping"
    )


def load_analyzer(args: argparse.Namespace, live: bool = False):
    """Recognizer (loaded once) + detector from the options of ``add_model_args``."""
    from ferkit import Recognizer
    from ferkit.inference.faces import MIN_FACE, FaceAnalyzer, create_detector

    if not 0.0 <= args.margin <= 1.0:
        raise InputError(f"--margin must be between 0 and 1, got {args.margin}")
    min_face, align = getattr(args, "min_face", MIN_FACE), not getattr(args, "no_align", False)
    if min_face < 0:
        raise InputError(f"--min-face must be at least 0, got {min_face}")
    for flag in ("detect_size", "live_detect_size"):
        if getattr(args, flag, 0) < 0:
            raise InputError(
                f"--{flag.replace('_', '-')} must be 0 (full size) or more, got {getattr(args, flag)}"
            )
    detector = create_detector(
        args.detector, detector_model(args), max_side=args.detect_size or None, live=live
    )
    rec = Recognizer.load(args.model, backend=args.backend, threads=args.threads, tta=args.tta)
    return FaceAnalyzer(rec, detector, margin=args.margin, min_face=min_face, align=align)


def detector_model(args: argparse.Namespace) -> str | None:
    """The model argument of ``create_detector``: YuNet's file, or BlazeFace's network."""
    if args.detector == "yunet":
        return args.yunet_model
    return getattr(args, "blazeface_model", "auto") if args.detector == "blazeface" else None


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="find faces in images, folders or videos and classify their expressions",
        description="Find every face in images, folders (recursively) or video files, classify "
        "its expression, and write one JSON line (or CSV row) per face.",
    )
    p.add_argument("inputs", nargs="+", help="image files, folders or video files")
    add_model_args(p)
    add_face_args(p)
    p.add_argument(
        "--face-crops",
        action="store_true",
        help="each image already is a cropped face: no detection, the whole image is classified",
    )
    p.add_argument("--format", default="jsonl", choices=["jsonl", "csv"], help="output format")
    p.add_argument("-o", "--output", default="-", help="output file (default: standard output)")
    p.add_argument(
        "--annotate",
        default=None,
        metavar="DIR",
        help="also write annotated images and videos (WebM/VP8, plays in browsers) here",
    )
    p.add_argument("--every", type=int, default=1, metavar="N", help="videos: analyse every N-th frame")
    p.add_argument(
        "--smooth",
        type=float,
        default=0.4,
        metavar="ALPHA",
        help="videos: weight of the newest frame in the per-face moving average (1: no smoothing)",
    )
    p.add_argument(
        "--detect-every",
        type=int,
        default=5,
        metavar="K",
        help="videos: full detection every K-th analysed frame, faces followed in between (1: detect every "
        "frame; default %(default)s)",
    )
    p.add_argument(
        "--summary",
        nargs="?",
        const="-",
        default=None,
        metavar="FILE",
        help="videos: per face track, the dominant expression and the share of time per expression; printed "
        "(standard error), or written as JSON to FILE",
    )
    p.add_argument(
        "--timeline",
        default=None,
        metavar="PNG",
        help="videos: plot each track's probabilities over time to this PNG (one per video: NAME-<video>.png "
        "when there are several; needs the [train] extra for matplotlib)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_max_file_arg(p)
    p.set_defaults(func=run)


def add_max_file_arg(p: argparse.ArgumentParser) -> None:
    """``--max-file-mb``: image files larger than this are refused before they are read."""
    from ferkit.data.images import MAX_FILE_BYTES

    p.add_argument(
        "--max-file-mb",
        type=float,
        default=MAX_FILE_BYTES / 2**20,
        metavar="MB",
        help="refuse image files larger than this, before reading them (default %(default)g)",
    )


def max_file_bytes(args: argparse.Namespace) -> int:
    """``--max-file-mb`` in bytes; InputError unless positive."""
    if not args.max_file_mb > 0:
        raise InputError(f"--max-file-mb must be positive, got {args.max_file_mb}")
    return int(args.max_file_mb * 2**20)


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
                k = kind(f)
                if k:
                    out.append((f, p, k))
        elif p.is_file():
            out.append((p, p.parent, kind(p) or "image"))  # named explicitly: try it as an image
        elif p.exists():
            raise InputError(f"{p}: not a regular file")
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
                self._csv.writerow(
                    [
                        source,
                        "" if frame is None else frame,
                        "" if time is None else f"{time:.3f}",
                        k,
                        *f.box.to_list(),
                        label,
                        f"{score:.6f}",
                        *(f"{float(p):.6f}" for p in f.probs),
                    ]
                )
            else:
                row: dict[str, Any] = {"source": source}
                if frame is not None:
                    row.update(frame=frame, time=round(time or 0.0, 3))
                if f.track is not None:
                    row["track"] = f.track
                row.update(
                    face=k,
                    box=f.box.to_list(),
                    label=label,
                    score=round(score, 6),
                    probs={c: round(float(p), 6) for c, p in zip(self.classes, f.probs)},
                )
                self.stream.write(json.dumps(row) + "\n")
            self.count += 1


def _batches(items: list, n: int) -> Iterator[list]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def _annotated_path(out_dir: Path, path: Path, root: Path, kind: str) -> Path:
    """The file the annotated copy of input ``path`` is written to: under ``out_dir`` as under ``root``; a
    video as VP8 WebM (plays in browsers), an image in its own format where OpenCV writes it, else PNG."""
    try:
        out = out_dir / path.relative_to(root)
    except ValueError:
        out = out_dir / path.name
    if kind == "video":
        return out.with_suffix(".webm")
    if out.suffix.lower() not in (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"):
        return out.with_suffix(".png")
    return out


def _predict_images(items, analyzer, writer, args, progress, warn, note) -> int:
    """Stream the images: each is decoded (reduced when large), detected and dropped; crops are classified
    in batches, and pixels are kept only for --annotate / --face-crops, within PENDING_BYTES."""
    from ferkit.data.images import load_image
    from ferkit.inference.annotate import draw_faces
    from ferkit.inference.faces import decode_side, scale_faces
    from ferkit.inference.recognizer import prepare_faces

    side = decode_side(args.detect_size)
    keep = bool(args.annotate or args.face_crops)
    pending: list = []  # (path, root, pixels or None, scale, faces)
    held = done = 0

    def flush() -> None:
        nonlocal held, done
        if args.face_crops:
            per_image = [[f] for f in analyzer.classify_crops([px for _, _, px, _, _ in pending])]
        else:
            analyzer.classify([f for *_, faces in pending for f in faces])
            per_image = [faces for *_, faces in pending]
        for (path, root, pixels, scale, _), faces in zip(pending, per_image):
            if args.annotate:
                _write_image(
                    _annotated_path(Path(args.annotate), path, root, "image"),
                    draw_faces(pixels, faces, analyzer.classes),
                )
            writer.write(str(path), scale_faces(faces, *scale))
            done += 1
        pending.clear()
        held = 0

    for path, root, _ in items:
        try:
            loaded = load_image(path, max_side=side, max_bytes=args.max_file_bytes)
            if args.face_crops:  # check each crop here, so one bad file does not sink its batch
                prepare_faces([loaded.pixels])
            faces = [] if args.face_crops else analyzer.detect(loaded.pixels, scale=loaded.scale)
        except InputError as e:
            warn(f"skipped {e}" if str(path) in str(e) else f"skipped {path}: {e}")
            progress.update(1)
            continue
        for msg in loaded.notes:
            note(msg)
        too_small = getattr(faces, "too_small", 0)
        if too_small:
            note(f"{path}: {too_small} face(s) smaller than --min-face {args.min_face} px left out")
        pending.append((path, root, loaded.pixels if keep else None, loaded.scale, faces))
        held += loaded.pixels.nbytes if keep else 0
        del loaded
        if len(pending) >= BATCH_IMAGES or held >= PENDING_BYTES:
            flush()
        progress.update(1)
    if pending:
        flush()
    return done


def _refuse_overwriting_inputs(args: argparse.Namespace, items: list[tuple[Path, Path, str]]) -> None:
    """InputError when an output would replace one of the inputs (``-o photo.jpg`` given ``photo.jpg``,
    ``--annotate`` naming the inputs' own folder): the input would be lost."""
    inputs = {p.resolve() for p, _, _ in items}
    for flag, value in (("-o", args.output), ("--summary", args.summary)):
        if value not in (None, "-") and Path(value).resolve() in inputs:
            raise InputError(f"{flag} {value} is one of the inputs: writing it would destroy it")
    for path, root, kind in items:
        targets = []
        if args.annotate:
            targets.append(("--annotate", _annotated_path(Path(args.annotate), path, root, kind)))
        if args.timeline and kind == "video":
            targets.append(("--timeline", args.timeline_path(path)))
        for flag, target in targets:
            if target.resolve() in inputs:
                raise InputError(f"{flag} would write {target} over an input; choose another name or folder")


def _write_image(path: Path, rgb) -> None:
    """Encode and write atomically: a failed write (full disk, file-size limit) leaves no half image."""
    import cv2

    from ferkit.io import atomic_write_bytes

    ok, data = cv2.imencode(path.suffix.lower(), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise InputError(f"cannot encode {path}")
    atomic_write_bytes(data.tobytes(), path)


def _predict_video(path: Path, root: Path, analyzer, writer, args, tqdm) -> dict[str, Any]:
    """Rows for every analysed frame; returns the video's per-track summary (and writes its timeline)."""
    from ferkit.inference.annotate import draw_faces
    from ferkit.inference.tracking import VideoFaceTracker, plot_timeline
    from ferkit.inference.video import VideoReader, VideoWriter

    tracker = VideoFaceTracker(analyzer, detect_every=args.detect_every, smooth=args.smooth)
    with VideoReader(path) as reader:
        out = None
        if args.annotate:
            out = VideoWriter(
                _annotated_path(Path(args.annotate), path, root, "video"),
                reader.info.fps,
                (reader.info.width, reader.info.height),
            )
        faces: list = []
        n = 0
        bar = tqdm(
            total=reader.info.frames or None,
            desc=path.name,
            unit="frame",
            leave=False,
            disable=args.no_progress or None,
            file=sys.stderr,
        )
        try:
            for i, t, frame, due in reader.frames(args.every, all_frames=out is not None):
                if due:
                    faces = tracker.process(frame, t)
                    writer.write(str(path), faces, frame=i, time=t)
                if out is not None and frame is not None:  # all_frames: every frame is given
                    if (frame.shape[1], frame.shape[0]) != (reader.info.width, reader.info.height):
                        raise InputError(f"{path}: frame size changes mid-video")
                    out.write(draw_faces(frame, faces, analyzer.classes))
                n += 1
                bar.update(1)
        finally:
            bar.close()
            if out is not None:
                out.close()
        fps = reader.info.fps
    if args.timeline:
        plot_timeline(tracker.timeline, analyzer.classes, args.timeline_path(path), title=path.name)
    return {
        "source": str(path),
        "fps": round(fps, 3),
        "frames": n,
        "analysed_frames": tracker.frames,
        "tracks": tracker.summary(),
    }


def _print_summary(videos: list[dict[str, Any]]) -> None:
    for v in videos:
        print(f"{v['source']}: {len(v['tracks'])} track(s) in {v['frames']} frame(s)", file=sys.stderr)
        for tr in v["tracks"]:
            shares = sorted(tr["share"].items(), key=lambda kv: -kv[1])
            top = ", ".join(f"{c} {s:.0%}" for c, s in shares if s >= 0.01)
            print(
                f"  track {tr['track']}: {tr['start']:.2f}-{tr['end']:.2f} s, {tr['frames']} frame(s), "
                f"mostly {tr['dominant']} ({top})",
                file=sys.stderr,
            )


def _timeline_paths(name: str, videos: list[Path]):
    """The PNG path per video: ``name`` itself for one video, ``<stem>-<video stem><suffix>`` for several."""
    out = Path(name)
    if out.suffix.lower() != ".png":
        raise InputError(f"--timeline {name}: give a .png file name")
    if not out.resolve().parent.is_dir():
        raise InputError(f"cannot write {name}: folder {out.parent} does not exist")
    if len(videos) <= 1:
        return lambda _video: out
    return lambda video: out.with_name(f"{out.stem}-{Path(video).stem}{out.suffix}")


@contextlib.contextmanager
def _open_output(path: str) -> Iterator[TextIO]:
    """Standard output, or a file that appears only complete (nothing half-written on any failure)."""
    from ferkit.io import atomic_open

    if path == "-":
        yield sys.stdout
    else:
        with atomic_open(path, "w", newline="") as f:
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
    args.max_file_bytes = max_file_bytes(args)
    if args.output != "-" and not Path(args.output).resolve().parent.is_dir():
        raise InputError(f"cannot write {args.output}: folder {Path(args.output).parent} does not exist")
    if args.output != "-" and Path(args.output).is_dir():
        raise InputError(f"cannot write {args.output}: it is a folder (-o takes a file name)")
    if args.detect_every < 1:
        raise InputError(f"--detect-every must be at least 1, got {args.detect_every}")
    if (args.summary or args.timeline) and not videos:
        raise InputError("--summary and --timeline apply to videos; no video among the inputs")
    if args.summary not in (None, "-") and not Path(args.summary).resolve().parent.is_dir():
        raise InputError(f"cannot write {args.summary}: folder {Path(args.summary).parent} does not exist")
    if args.timeline:
        from ferkit.extras import require

        require("--timeline", "matplotlib")  # before any work is done
        args.timeline_path = _timeline_paths(args.timeline, [p for p, _, _ in videos])
    if args.annotate and Path(args.annotate).exists() and not Path(args.annotate).is_dir():
        raise InputError(f"--annotate {args.annotate}: not a folder (it is an existing file)")
    _refuse_overwriting_inputs(args, items)
    problems: list[str] = []

    def warn(msg: str) -> None:
        problems.append(msg)
        tqdm.write(f"ferkit: warning: {msg}", file=sys.stderr)

    def note(msg: str) -> None:  # worth saying, but the input was used
        tqdm.write(f"ferkit: warning: {msg}", file=sys.stderr)

    n_images = n_videos = 0
    with _open_output(args.output) as stream:  # opened first: an unwritable -o fails before the model loads
        analyzer = load_analyzer(args)
        writer = RowWriter(stream, args.format, analyzer.classes)
        if images:
            with tqdm(
                total=len(images),
                desc="images",
                unit="img",
                disable=args.no_progress or None,
                file=sys.stderr,
            ) as bar:
                n_images = _predict_images(images, analyzer, writer, args, bar, warn, note)
        summaries = []
        for path, root, _ in videos:
            try:
                summaries.append(_predict_video(path, root, analyzer, writer, args, tqdm))
                n_videos += 1
            except InputError as e:
                warn(f"skipped {e}")
        if problems and not n_images + n_videos:  # inside the with: an existing -o file is left as it was
            raise FerkitError(f"none of the {len(items)} input(s) could be read (see warnings above)")
        stream.flush()
    if args.summary == "-":
        _print_summary(summaries)
    elif args.summary:
        from ferkit.io import atomic_write_text

        atomic_write_text(args.summary, json.dumps({"videos": summaries}, indent=2) + "\n")
    print(
        f"ferkit: {writer.count} face(s) in {n_images} image(s) and {n_videos} video(s)"
        + (f"; {len(problems)} input(s) skipped" if problems else ""),
        file=sys.stderr,
    )
    if problems:
        raise FerkitError(f"{len(problems)} of {len(items)} input(s) could not be read (see warnings above)")
    return 0
