"""``ferkit models``: list the registered architectures and the bundled/local trained models."""

from __future__ import annotations

import argparse
import importlib.util

from ferkit.extras import missing_extra_message
from ferkit.inference.bundled import describe_bundled, describe_local
from ferkit.models.registry import model_doc


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "models",
        help="list model architectures and trained models",
        description="List the registered architectures (for `ferkit train model=NAME`) with "
        "their parameter counts, and the bundled default model.",
    )
    p.add_argument("pattern", nargs="?", default="*", help="glob filter on architecture names")
    p.add_argument("--runs", default="runs", help="folder of local training runs to list (default runs)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    print("architectures:")
    if importlib.util.find_spec("torch") is None:  # the lean install runs the bundled ONNX model only
        print(f"  ({missing_extra_message('torch', 'listing and training architectures')})")
    else:
        from ferkit.models import create_model, list_models

        names = list_models(args.pattern)
        if not names:  # e.g. `ferkit models list`: the word is taken as the pattern
            print(f"  (none matches {args.pattern!r}; registered: {', '.join(list_models())})")
        for name in names:
            n = sum(p.numel() for p in create_model(name).parameters())
            print(f"  {name:<16} {n / 1e6:6.2f}M params  {model_doc(name)}")
    print(describe_bundled())
    local = describe_local(args.runs)
    if local:
        print(f"local runs ({args.runs}/*/best.pt):")
        print("\n".join(local))
    return 0
