"""A tiny model registry (after timm): ``@register_model`` records builders; ``create_model`` builds."""

from __future__ import annotations

import fnmatch
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ferkit.errors import ModelError
from ferkit.labels import CLASSES

if TYPE_CHECKING:  # the registry itself stays torch-free: ModelMeta is read by the ONNX runtime too
    from torch import nn

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


@dataclass
class ModelMeta:
    """What travels with the weights: enough to preprocess and label without anything else."""

    name: str
    args: dict[str, Any] = field(default_factory=dict)
    image_size: int = 48  # faces are resized to this (grayscale)
    input_size: int = 40  # the model sees crops of this side
    mean: float = 0.5  # normalisation on [0,1] pixels
    std: float = 0.25
    classes: list[str] = field(default_factory=lambda: list(CLASSES))
    temperature: float = 1.0  # softmax temperature fitted on the validation split (calibration)
    # Per-class offsets added to logits / temperature: a prior correction fitted on the validation split
    # (``ferkit calibrate --prior-correction``); None = no offsets.
    logit_bias: list[float] | None = None


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    if fn.__name__ in _REGISTRY:
        raise ValueError(f"model {fn.__name__} registered twice")
    _REGISTRY[fn.__name__] = fn
    return fn


def _ensure_builtin() -> None:
    # Import the model families here (not as a side effect of some other import) so the registry is full.
    from ferkit.models import sepres, vgg  # noqa: F401


def list_models(pattern: str = "*") -> list[str]:
    _ensure_builtin()
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def model_doc(name: str) -> str:
    """First line of a registered model's docstring."""
    _ensure_builtin()
    return (_REGISTRY[name].__doc__ or "").strip().splitlines()[0] if name in _REGISTRY else ""


def require_model(name: str) -> str:
    """``name`` when it is a registered model; ModelError naming the registered ones otherwise."""
    _ensure_builtin()
    if name not in _REGISTRY:
        raise ModelError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    return name


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model; unknown names and unknown arguments fail loudly."""
    fn = _REGISTRY[require_model(name)]
    params = inspect.signature(fn).parameters
    bad = [k for k in kwargs if k not in params]
    if bad:
        raise ModelError(f"model {name!r} has no argument(s) {', '.join(bad)}; it takes {', '.join(params)}")
    try:
        return fn(**kwargs)
    except (TypeError, ValueError, RuntimeError, ZeroDivisionError) as e:  # width=0, dropout=5, fc="x", ...
        args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
        raise ModelError(f"cannot build model {name!r} with {args or 'its defaults'}: {e}") from None
