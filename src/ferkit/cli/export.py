"""``ferkit export``: a checkpoint or an ensemble as one ONNX graph (probabilities out), checked against
PyTorch, optionally in float16 or int8 with the accuracy change on PublicTest reported."""

from __future__ import annotations

import argparse
import sys

from ferkit.data import load_dataset
from ferkit.errors import ConfigError, ModelError
from ferkit.io import atomic_write_bytes
from ferkit.runtime import TTA_MODES as TTA_CHOICES

PROBE_FACES = 64


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a model or an ensemble to ONNX (optionally fp16/int8)",
        description="Write one ONNX graph: input N x 48 x 48 grayscale (uint8, or float in [0,255]), any N; "
        "output N x 7 probabilities. Normalisation, test-time crops, temperatures and the ensemble "
        "combination are inside the graph and the class names, input format and crops in its "
        "metadata, so the .onnx file alone is enough. The export fails, writing nothing, unless "
        "ONNX Runtime matches PyTorch within 1e-4 on face images (PublicTest ones with --data).",
        epilog="Example: ferkit export runs/ensemble.pt -o ensemble.onnx --tta ten_crop --int8 static "
        "--data ../shared/data/fer2013",
    )
    p.add_argument("model", help="checkpoint or ensemble file (.pt)")
    p.add_argument("-o", "--out", required=True, help="the .onnx file to write")
    p.add_argument(
        "--tta",
        default="center",
        choices=TTA_CHOICES,
        help="test-time crops built into the graph (default center)",
    )
    p.add_argument(
        "--input",
        default="uint8",
        choices=("uint8", "float"),
        dest="input_format",
        help="input type: uint8, or float32 with values in [0,255] (default uint8)",
    )
    q = p.add_mutually_exclusive_group()
    q.add_argument("--fp16", action="store_true", help="float16 weights and arithmetic (half the size)")
    q.add_argument(
        "--int8",
        choices=("dynamic", "static"),
        help="int8 quantisation: dynamic (fully connected layers) or static (convolutions too; "
        "calibrated on Training faces of --data)",
    )
    p.add_argument(
        "--data",
        help="dataset: PublicTest faces for the parity check and the accuracy change, "
        "Training faces for static calibration",
    )
    p.set_defaults(func=run)


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def run(args: argparse.Namespace) -> int:

    from ferkit.inference.export import export_onnx, probe_images
    from ferkit.inference.quantize import calibration_faces, compare, to_fp16, to_int8

    if args.int8 == "static" and not args.data:
        raise ConfigError("--int8 static calibrates on Training faces: give --data")
    val = calib = None
    if args.data:
        ds = load_dataset(args.data)
        val = ds.split("PublicTest")
        if args.int8 == "static":
            calib = calibration_faces(ds.split("Training").images)
    probes = val.images[:PROBE_FACES] if val is not None else probe_images(PROBE_FACES)
    where = (
        f"{len(probes)} PublicTest faces" if val is not None else f"{len(probes)} synthetic face-like images"
    )

    converting = args.fp16 or args.int8
    result = export_onnx(
        args.model,
        None if converting else args.out,
        tta=args.tta,
        input_format=args.input_format,
        probes=probes,
    )
    print(f"parity ONNX Runtime vs PyTorch: max |dp| {result.parity:.1e} on {where} (limit 1e-4)")
    if not converting:
        print(
            f"wrote {args.out} (fp32, {_mb(len(result.data))}, tta {args.tta}, input {args.input_format})",
            file=sys.stderr,
        )
        return 0

    precision = "fp16" if args.fp16 else f"int8-{args.int8}"
    data = to_fp16(result.data) if args.fp16 else to_int8(result.data, args.int8, calib)
    check = compare(result.data, data, probes)
    if not check["max_sum_error"] < 1e-3:
        raise ModelError(
            f"{precision} model's probabilities do not sum to 1 (off by {check['max_sum_error']:.1e}); "
            "nothing written"
        )
    print(
        f"{precision} vs fp32 on {where}: max |dp| {check['max_abs_diff']:.1e}, "
        f"same top class {100 * check['agreement']:.1f}%"
    )
    if val is not None:
        acc = compare(result.data, data, val.images, val.labels)
        print(
            f"{precision} on PublicTest ({len(val)} faces, tta {args.tta}): "
            f"accuracy {100 * acc['accuracy_fp32']:.2f}% "
            f"(fp32) -> {100 * acc['accuracy']:.2f}% ({100 * acc['accuracy_change']:+.2f} points), "
            f"same top class {100 * acc['agreement']:.2f}%"
        )
    atomic_write_bytes(data, args.out)
    print(
        f"wrote {args.out} ({precision}, {_mb(len(data))} vs {_mb(len(result.data))} fp32, tta {args.tta}, "
        f"input {args.input_format})",
        file=sys.stderr,
    )
    return 0
