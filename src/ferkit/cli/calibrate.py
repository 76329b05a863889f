"""``ferkit calibrate``: fit the softmax temperature on the validation split."""

from __future__ import annotations

import argparse

from ferkit.runtime import TTA_MODES


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "calibrate",
        help="fit a checkpoint's softmax temperature on PublicTest",
        description="Temperature scaling: find T minimising the negative log-likelihood of "
        "softmax(logits/T) on the validation split (PublicTest; PrivateTest is refused), "
        "store it in a new checkpoint and print the expected calibration error "
        "before and after. Accuracy is unchanged.",
    )
    p.add_argument("model", help="checkpoint (.pt)")
    p.add_argument("--data", required=True, help="FER2013 CSV or folders")
    p.add_argument("-o", "--out", required=True, help="where to write the calibrated checkpoint")
    p.add_argument("--split", default="PublicTest", help="validation split to fit on (default PublicTest)")
    p.add_argument(
        "--tta",
        default="center",
        choices=TTA_MODES,
        help="test-time crops the model will be used with (default center)",
    )
    p.add_argument(
        "--prior-correction",
        action="store_true",
        help="also fit per-class logit offsets -tau*log(class frequency in Training), tau chosen on "
        "the validation split for the mean of accuracy and balanced accuracy",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ferkit.evaluation.calibrate import calibrate_checkpoint

    c = calibrate_checkpoint(
        args.model, args.data, args.out, split=args.split, tta=args.tta, prior=args.prior_correction
    )
    if "prior_tau" in c:
        print(
            f"prior correction tau {c['prior_tau']:.2f} on {c['split']}: accuracy "
            f"{c['accuracy_before']:.4f} -> {c['accuracy_after']:.4f}"
        )
    print(
        f"temperature {c['temperature']:.3f} fitted on {c['split']} ({c['n']} images, {c['tta']} crops): "
        f"ECE {c['ece_before']:.4f} -> {c['ece_after']:.4f}, "
        f"NLL {c['nll_before']:.4f} -> {c['nll_after']:.4f};"
        f" wrote {args.out}"
    )
    return 0
