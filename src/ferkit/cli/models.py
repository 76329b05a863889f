"""``ferkit models``: list the registered architectures and the bundled/local trained models."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list model architectures and trained models",
                       description="List the registered architectures (for `ferkit train model=NAME`) with "
                                   "their parameter counts, and the bundled default model.")
    p.add_argument("pattern", nargs="?", default="*", help="glob filter on architecture names")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ferkit.models import create_model, list_models

    print("architectures:")
    for name in list_models(args.pattern):
        m = create_model(name)
        n = sum(p.numel() for p in m.parameters())
        doc = (m.__class__.__doc__ or "").strip().splitlines()[0]
        from ferkit.models.registry import _REGISTRY

        doc = (_REGISTRY[name].__doc__ or doc).strip().splitlines()[0]
        print(f"  {name:<16} {n / 1e6:6.2f}M params  {doc}")
    try:
        from ferkit.inference.bundled import describe_bundled

        print(describe_bundled())
    except ImportError:
        pass
    return 0
