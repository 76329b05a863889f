"""Optional dependencies: which extra brings which module, and one clear error when one is missing.

``pip install ferkit`` is the lean inference install (ONNX Runtime, no torch). Training, export and
evaluation of PyTorch models need ``ferkit[train]``; the web app needs ``ferkit[serve]``.
"""

from __future__ import annotations

import importlib.util

from ferkit.errors import FerkitError

# Top-level module name -> the extra that installs it.
MODULE_EXTRAS = {
    "torch": "train",
    "sklearn": "train",
    "imblearn": "train",
    "scipy": "train",
    "matplotlib": "train",
    "onnx": "train",
    "fastapi": "serve",
    "uvicorn": "serve",
    "starlette": "serve",
    "websockets": "serve",
    "multipart": "serve",
    "python_multipart": "serve",
    "swagger_ui_bundle": "serve",
}


class MissingExtraError(FerkitError):
    """A feature needs an optional dependency that is not installed."""

    exit_code = 6


def missing_extra_message(module: str, what: str | None = None) -> str | None:
    """The one-line advice for a missing top-level ``module``, or None when no extra provides it."""
    top = module.split(".")[0]
    extra = MODULE_EXTRAS.get(top)
    if extra is None:
        return None
    need = f"{what} needs" if what else f"this needs {top}, which comes with"
    return f"{need} the [{extra}] extra: pip install 'ferkit[{extra}]'"


def require(what: str, *modules: str) -> None:
    """MissingExtraError naming the extra when one of ``modules`` is missing; ``what`` names the feature."""
    for module in modules:
        if importlib.util.find_spec(module) is None:
            extra = MODULE_EXTRAS.get(module, "all")
            raise MissingExtraError(f"{what} needs the [{extra}] extra: pip install 'ferkit[{extra}]'")
