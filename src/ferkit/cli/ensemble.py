"""``ferkit ensemble build``: several checkpoints in one file, combined by mean probability (the study's
choice), mean logit, or weights learned on the validation split."""

from __future__ import annotations

import argparse
import sys

COMBINE_CHOICES = ("prob", "logit", "learned")  # = ferkit.models.ensemble.COMBINE_MODES (light to import)
from ferkit.data import load_dataset
from ferkit.errors import ConfigError
from ferkit.runtime import TTA_MODES as TTA_CHOICES


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ensemble",
        help="combine checkpoints into one ensemble file",
        description="Build ensemble files: the members' weights are embedded, so the file alone "
        "is enough to evaluate, export or serve.",
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    b = actions.add_parser(
        "build",
        help="build an ensemble file from member checkpoints",
        description="Embed member checkpoints (weights and metadata only) in one file. "
        "--combine prob averages "
        "the members' softmax probabilities (the study's choice); logit averages their logits; "
        "learned fits simplex weights minimising the log-loss on the validation split "
        "(PublicTest of --data; PrivateTest is never used).",
        epilog="Example: ferkit ensemble build --member runs/ros/best.pt --member runs/smote/best.pt "
        "--member runs/smote_tomek/best.pt -o runs/ensemble.pt",
    )
    b.add_argument(
        "--member",
        action="append",
        required=True,
        metavar="CKPT",
        help="a member checkpoint (repeat, or give several after one --member)",
        nargs="+",
    )
    b.add_argument("-o", "--out", required=True, help="the ensemble file to write (.pt)")
    b.add_argument(
        "--combine", default="prob", choices=COMBINE_CHOICES, help="combination rule (default prob)"
    )
    b.add_argument("--data", help="dataset whose PublicTest split fits --combine learned weights")
    b.add_argument(
        "--tta",
        default="ten_crop",
        choices=TTA_CHOICES,
        help="test-time crops used while fitting learned weights (default ten_crop)",
    )
    b.set_defaults(func=build)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def build(args: argparse.Namespace) -> int:
    from ferkit.models.ensemble import build_ensemble, ensemble_from_dict, fit_ensemble_weights, save_ensemble

    members = [m for group in args.member for m in group]
    if args.combine == "learned" and not args.data:
        raise ConfigError("--combine learned fits weights on the validation split: give --data")
    if args.data and args.combine != "learned":
        raise ConfigError("--data is only used to fit --combine learned weights")
    ens = build_ensemble(members, combine=args.combine)
    if args.combine == "learned":
        val = load_dataset(args.data).split("PublicTest")
        weights, report = fit_ensemble_weights(ensemble_from_dict(ens), val.images, val.labels, tta=args.tta)
        ens["weights"] = weights
        ens["fit"] = {"split": "PublicTest", "tta": args.tta, **report}
        print(
            f"learned weights on PublicTest ({report['n']} faces, tta {args.tta}): "
            + ", ".join(f"{m['name']} {w:.3f}" for m, w in zip(ens["members"], weights))
        )
        print(
            f"  PublicTest log-loss {report['uniform_nll']:.4f} -> {report['learned_nll']:.4f}, accuracy "
            f"{report['uniform_accuracy']:.4f} -> {report['learned_accuracy']:.4f} (fitted there: judge on "
            "PrivateTest)"
        )
    save_ensemble(ens, args.out)
    names = ", ".join(m["name"] for m in ens["members"])
    print(f"wrote {args.out}: {len(members)} members ({names}), combine={args.combine}", file=sys.stderr)
    return 0
