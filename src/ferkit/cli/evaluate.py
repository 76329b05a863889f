"""``ferkit evaluate``: metrics of a model file on a dataset split, with a de-duplicated twin set."""

from __future__ import annotations

import argparse
import json
import sys

from ferkit.runtime import TTA_MODES as TTA_CHOICES


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {value}")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="evaluate a model on a dataset split (top-k, balanced accuracy, macro-F1, ECE)",
        description="Evaluate a model file (checkpoint, ensemble or exported .onnx) on one split. "
        "Unless --no-dedup, the split is also scored without the images that also occur in "
        "Training, so duplicates cannot flatter the model. Ensembles get one row per member too.",
        epilog="Example: ferkit evaluate runs/vgg/best.pt --data fer2013.csv --split PrivateTest -o eval/vgg",
    )
    p.add_argument("model", help="model file, e.g. runs/vgg/best.pt")
    p.add_argument("--data", required=True, help="dataset path (FER2013 CSV or folders, or class folders)")
    p.add_argument(
        "--split",
        default="PrivateTest",
        help='split to evaluate (default PrivateTest); "all" for every row; class folders without '
        'official splits are loaded as Training; "heldout": the fixed held-out part of such data '
        "(AffectNet's second validation set, which training with aux_sampling=per_batch never sees)",
    )
    p.add_argument(
        "--tta",
        default=None,
        choices=TTA_CHOICES,
        help="test-time crops whose logits are averaged (default: the crops built into an .onnx "
        "file, else ten_crop as in the study)",
    )
    p.add_argument(
        "--crop",
        type=_fraction,
        default=1.0,
        help="score the central fraction of each face, resized back (e.g. 0.8: AffectNet's looser crops "
        "in FER2013's framing; default 1)",
    )
    p.add_argument("-o", "--out", help="write metrics.json, report.md and confusion.png to this folder")
    p.add_argument(
        "--batch-size", type=_positive_int, default=256, help="images per forward pass (default 256)"
    )
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default cpu)")
    p.add_argument(
        "--no-dedup", dest="dedup", action="store_false", help="skip the set without Training duplicates"
    )
    p.add_argument("--json", action="store_true", help="print the full result as JSON instead of the table")
    p.add_argument(
        "--skip-bad", action="store_true", help="skip unreadable images and bad rows (counted in the report)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ferkit.evaluation.evaluate import evaluate
    from ferkit.evaluation.report import dedup_sentence, format_table

    # The fully resolved equivalent command (whatever way it was invoked), for the report.
    command = [
        "ferkit",
        "evaluate",
        args.model,
        "--data",
        args.data,
        "--split",
        args.split,
        *(["--tta", args.tta] if args.tta else []),
        *(["--crop", f"{args.crop:g}"] if args.crop != 1 else []),
        "--batch-size",
        str(args.batch_size),
        "--device",
        args.device,
    ]
    command += (["-o", args.out] if args.out else []) + ([] if args.dedup else ["--no-dedup"])
    command += ["--skip-bad"] if args.skip_bad else []
    result = evaluate(
        args.model,
        args.data,
        split=args.split,
        tta=args.tta,
        out_dir=args.out,
        batch_size=args.batch_size,
        device=args.device,
        dedup=args.dedup,
        command=command,
        skip_bad=args.skip_bad,
        crop=args.crop,
    )
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"{result['model']['name']} on {result['split']} of {result['data_path']} (tta {result['tta']}"
            + (f", central {result['crop']:g} of each face)" if result.get("crop", 1) != 1 else ")")
        )
        if result.get("dedup"):
            print(dedup_sentence(result))
        if result["data_skipped"]:
            reasons = ", ".join(f"{n} {why}" for why, n in result["data_skipped"].items())
            print(f"skipped in the data: {reasons}")
        print(format_table(result))
    if args.out:
        print(f"wrote {', '.join(result['files'].values())}", file=sys.stderr)
    return 0
