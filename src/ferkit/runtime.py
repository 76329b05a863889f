"""Where and how a model runs: devices and test-time crops. Torch-free at import (torch loads on demand).

One error type for both: a bad device or crop mode is a ``ConfigError``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, get_args

from ferkit.errors import ConfigError

if TYPE_CHECKING:
    import torch

# Test-time crops: centre crop, centre + mirror, or ten-crop (4 corners + centre, and their mirrors).
TTA = Literal["center", "mirror", "ten_crop"]
TTA_MODES: tuple[str, ...] = get_args(TTA)


def check_tta(mode: str) -> str:
    """``mode`` when it is a known test-time crop mode; ConfigError otherwise."""
    if mode not in TTA_MODES:
        raise ConfigError(f"unknown test-time crop mode {mode!r}; use one of {', '.join(TTA_MODES)}")
    return mode


def check_device(device: str | torch.device) -> torch.device:
    """A usable torch device, or ConfigError with one line (not a CUDA assertion deep inside torch)."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ConfigError(f"bad device {device!r}: {e}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {device!r} requested but MPS is not available")
    return dev


def resolve_device(name: str | torch.device) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; anything else through ``check_device``."""
    import torch

    if str(name) == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return check_device(name)
