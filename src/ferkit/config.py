"""Dataclass configs: a YAML file plus ``key=value`` overrides, type-checked, saved with each run."""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from ferkit.errors import ConfigError, one_line

# The choices a config field accepts; ``typing.get_args`` turns each into its tuple of names.
Optimizer = Literal["sgd", "adam", "adamw"]
Scheduler = Literal["plateau", "cosine", "onecycle", "none"]
Balance = Literal["none", "ros", "smote", "smote_tomek", "smote_enn", "class_weight", "sampler"]
Protocol = Literal["official", "study"]
AugmentSubset = Literal["all", "balanced"]
# How auxiliary data (AffectNet) joins training: "pooled" adds aux_ratio x len(Training) of its images to
# the training set (the study grid's rows; under the official protocol drawn from outside AffectNet's fixed
# held-out part, which it does not report); "per_batch" reports that held-out part as a second validation
# set and fills a fixed share of every batch from the rest.
AuxSampling = Literal["pooled", "per_batch"]
AuxBalance = Literal["none", "sampler"]
SelectOn = Literal["mean", "val", "aux_val"]


@dataclass
class CopyAugmentConfig:
    """The study's transforms for the added copies of a class-balanced subset (``augment.subset: balanced``).

    Separate from the per-batch augmentation, so the study's rows change only the copies.
    """

    hflip: float = 0.5  # probability
    rotation: float = 15.0  # degrees, uniform in [-r, r]
    noise_std: float = 0.0  # upper end of the Gaussian noise sigma (on [0,1] pixels); 0 = off
    noise_prob: float = 0.0


@dataclass
class AugmentConfig:
    """Batch-wise augmentation applied on the training device (see ferkit.data.augment)."""

    scale: tuple[float, float] = (0.8, 1.2)  # RandomResizedCrop-like zoom range
    translate: float = 0.2  # max shift, fraction of the image side
    rotation: float = 10.0  # degrees, uniform in [-r, r]
    hflip: float = 0.5  # probability
    erasing: float = 0.5  # probability of one random erased rectangle
    noise_std: float = 0.0  # Gaussian noise sigma (on [0,1] pixels); 0 = off
    noise_prob: float = 0.0
    brightness: float = 0.0  # max relative change of brightness/contrast; 0 = off
    # Augmentation for faces from other cameras (all off by default; see ferkit.data.augment):
    contrast: float = 0.0  # contrast gain log-uniform in [1/(1+c), 1+c] about the image mean; 0 = off
    gamma: float = 0.0  # gamma log-uniform in [exp(-g), exp(g)] on [0,1] pixels; 0 = off
    blur: float = 0.0  # probability of a Gaussian blur
    blur_sigma: tuple[float, float] = (0.4, 1.5)  # pixels of the 48x48 face, uniform
    jpeg: float = 0.0  # probability of JPEG compression (8x8 DCT quantisation on the device)
    jpeg_quality: tuple[int, int] = (20, 90)  # JPEG quality, uniform
    # Detector-like crop errors (Gaussian, folded into the same affine warp): probability, then the
    # spread of the crop's scale (log), centre shift (fraction of the side) and residual roll (degrees).
    crop_jitter: float = 0.0
    crop_scale_std: float = 0.08
    crop_shift_std: float = 0.05
    crop_roll_std: float = 5.0
    crop: int = 40  # side of the random crop fed to the model
    # "balanced": also add augmented copies of a random class-balanced subset, transformed by ``copies``
    # (the study's augmentation); "all": no copies, only the per-batch augmentation above.
    subset: AugmentSubset = "all"
    copies: CopyAugmentConfig = field(default_factory=CopyAugmentConfig)
    enabled: bool = True


@dataclass
class TrainConfig:
    """Everything a training run needs; every field can be overridden from the command line."""

    model: str = "vgg_fer_w32"
    model_args: dict[str, Any] = field(default_factory=dict)
    data: str | None = None  # FER2013 CSV or folders; required to train (--data PATH or data=PATH)
    train_split: str = "Training"
    val_split: str = "PublicTest"
    aux_data: str | None = None  # e.g. an AffectNet class-folder tree
    # Auxiliary images per FER2013 training image (0 = none); per_batch: each batch holds
    # round(batch_size x r / (1 + r)) auxiliary images, and an epoch is one pass over FER2013 Training.
    aux_ratio: float = 0.0
    aux_sampling: AuxSampling = "pooled"
    aux_balance: AuxBalance = "none"  # per_batch: "sampler" draws the auxiliary share class-balanced
    # The central fraction of each auxiliary face kept (then resized back): AffectNet's crops are looser
    # than FER2013's, and detected faces are cropped to FER2013's framing (0.8 matches best; data.images).
    aux_crop: float = 1.0
    # per_batch: the best checkpoint (and plateau schedule, early stopping) follows PublicTest accuracy
    # ("val"), the auxiliary held-out accuracy ("aux_val") or their mean; without one it is PublicTest's.
    select_on: SelectOn = "mean"
    balance: Balance = "none"
    protocol: Protocol = "official"  # "study": the study's leaky resample-then-split protocol
    epochs: int = 300
    batch_size: int = 64
    optimizer: Optimizer = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-4
    scheduler: Scheduler = "plateau"  # cosine and onecycle step per batch; onecycle peaks at lr
    plateau_factor: float = 0.75
    plateau_patience: int = 5
    warmup_epochs: int = 0
    early_stopping: int = 0  # patience in epochs on validation accuracy; 0 = off
    label_smoothing: float = 0.0
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    finetune_from: str | None = None  # checkpoint whose weights initialise the model
    # Knowledge distillation: a checkpoint or ensemble file whose softened predictions the student also fits.
    teacher: str | None = None
    distill_alpha: float = 0.5  # weight of the distillation term (1 - alpha on the labels)
    distill_temperature: float = 4.0
    max_train_images: int = 0  # 0 = all; >0 subsamples the training split (quick runs)
    skip_bad: bool = False  # skip (and count) unreadable images and rows instead of stopping
    seed: int = 0
    device: str = "auto"  # auto|cpu|cuda|cuda:N
    amp: bool = True  # mixed precision (bf16) when on GPU
    channels_last: bool = False  # model and batches in channels-last memory format (GPU convolutions)
    compile: bool = False  # torch.compile the training network; eager, with a warning, if that fails
    threads: int = 0  # torch CPU threads; 0 = library default
    out: str = "runs/default"
    progress: bool = True


# The range of each numeric field: (low, high, ends) with the ends as in interval notation ("[)": low
# included, high excluded; high None: no upper end). Tuple fields: each value, and low <= high.
Bound = tuple[float, float | None, str]
_POSITIVE: Bound = (0, None, "(")
_NON_NEGATIVE: Bound = (0, None, "[")
_PROBABILITY: Bound = (0, 1, "[]")
_FRACTION: Bound = (0, 1, "[)")
IMAGE_SIDE = 48  # FER2013's faces; the random crop fits inside them

RANGES: dict[type, dict[str, Bound]] = {
    TrainConfig: {
        "aux_ratio": _NON_NEGATIVE,
        "aux_crop": (0, 1, "(]"),
        "epochs": (1, None, "["),
        "batch_size": (1, None, "["),
        "lr": _NON_NEGATIVE,  # 0 freezes the weights (a baseline; the early-stopping test); torch refuses < 0
        "momentum": _FRACTION,
        "weight_decay": _NON_NEGATIVE,
        "plateau_factor": (0, 1, "()"),  # torch's ReduceLROnPlateau needs factor < 1
        "plateau_patience": _NON_NEGATIVE,
        "warmup_epochs": _NON_NEGATIVE,
        "early_stopping": _NON_NEGATIVE,
        "label_smoothing": _FRACTION,
        "distill_alpha": _PROBABILITY,
        "distill_temperature": _POSITIVE,
        "max_train_images": _NON_NEGATIVE,
        "seed": (0, 2**32, "[)"),  # numpy's generators refuse negative seeds
        "threads": _NON_NEGATIVE,  # 0 = torch's default
    },
    AugmentConfig: {
        "scale": _POSITIVE,
        "translate": _NON_NEGATIVE,
        "rotation": _NON_NEGATIVE,
        "hflip": _PROBABILITY,
        "erasing": _PROBABILITY,
        "noise_std": _NON_NEGATIVE,
        "noise_prob": _PROBABILITY,
        "brightness": _PROBABILITY,
        "contrast": _NON_NEGATIVE,
        "gamma": _NON_NEGATIVE,
        "blur": _PROBABILITY,
        "blur_sigma": _NON_NEGATIVE,
        "jpeg": _PROBABILITY,
        "jpeg_quality": (1, 100, "[]"),
        "crop_jitter": _PROBABILITY,
        "crop_scale_std": _NON_NEGATIVE,
        "crop_shift_std": _NON_NEGATIVE,
        "crop_roll_std": _NON_NEGATIVE,
        "crop": (1, IMAGE_SIDE, "[]"),
    },
    CopyAugmentConfig: {
        "hflip": _PROBABILITY,
        "rotation": _NON_NEGATIVE,
        "noise_std": _NON_NEGATIVE,
        "noise_prob": _PROBABILITY,
    },
}


def _nearest(word: str, options: Any) -> str | None:
    """The option closest to a misspelt ``word`` (difflib), or None when nothing is close."""
    close = difflib.get_close_matches(str(word), [str(o) for o in options], n=1, cutoff=0.6)
    return close[0] if close else None


def _check_choice(name: str, value: Any, choices: tuple[Any, ...]) -> Any:
    if value in choices and isinstance(value, str):
        return value
    near = _nearest(value, choices) if isinstance(value, str) else None
    hint = f" (did you mean {near}?)" if near else ""
    raise ConfigError(f"{name}: {value!r} is not one of {'|'.join(map(str, choices))}{hint}")


def _check_union(name: str, value: Any, args: tuple[Any, ...]) -> Any:
    if value is None and type(None) in args:
        return None
    errors = []
    for a in args:
        if a is type(None):
            continue
        try:
            return _check_type(name, value, a)
        except ConfigError as e:
            errors.append(str(e))
    raise ConfigError(errors[0] if errors else f"{name}: bad value {value!r}")


# A number in scientific notation that YAML 1.1 leaves a string (it wants a dot and a signed exponent):
# 1e-3, 5E-4, 1e+2, 1.5e3.
_SCIENTIFIC = re.compile(r"[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)[eE][-+]?[0-9]+")


def _scientific(value: Any) -> Any:
    """``value`` as a float when it is text in scientific notation (1e-3), else as it is."""
    if isinstance(value, str) and _SCIENTIFIC.fullmatch(value):
        return float(value.replace("_", ""))
    return value


def _check_scalar(name: str, value: Any, tp: type) -> Any:
    """bool, int, float or str: the value itself (ints may stand for floats, and numbers may be written
    1e-3; an int field takes them when they are whole); ConfigError otherwise."""
    shown = value
    if tp in (int, float):
        value = _scientific(value)
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is bool and isinstance(value, bool):
        return value
    if tp is int and is_number and (isinstance(value, int) or float(value).is_integer()):
        return int(value)
    if tp is float and is_number:
        return float(value)
    if tp is str and isinstance(value, str):
        return value
    expected = {bool: "true/false", int: "an integer", float: "a number", str: "a string"}[tp]
    raise ConfigError(f"{name}: expected {expected}, got {shown!r}")


def _check_type(name: str, value: Any, tp: Any) -> Any:
    """Coerce ``value`` to the annotated type ``tp`` or raise ConfigError."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return _check_union(name, value, args)
    if origin is Literal:
        return _check_choice(name, value, args)
    if tp is Any:
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{name}: expected a list of {len(args)} values, got {value!r}")
        return tuple(_check_type(name, v, a) for v, a in zip(value, args))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{name}: expected a mapping, got {value!r}")
        return {k: _scientific(v) for k, v in value.items()}  # free-form values (model_args) too
    if tp in (bool, int, float, str):
        return _check_scalar(name, value, tp)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{name}: expected a mapping, got {value!r}")
        return from_dict(tp, value, prefix=name + ".", ranges=False)  # the whole config's check says all
    return value


def _unknown_fields(unknown: list[str], names: set[str], prefix: str) -> ConfigError:
    parts = []
    for u in unknown:
        near = _nearest(u, names)
        parts.append(f"{prefix}{u}" + (f" (did you mean {prefix}{near}?)" if near else ""))
    known = "" if all(_nearest(u, names) for u in unknown) else f" (known: {', '.join(sorted(names))})"
    return ConfigError(f"unknown config field(s): {', '.join(parts)}{known}")


def from_dict(cls: type, data: dict[str, Any], prefix: str = "", ranges: bool = True) -> Any:
    """Build dataclass ``cls`` from a dict, rejecting unknown keys, wrong types and (``ranges``) values
    out of range, all in one line."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise _unknown_fields(unknown, names, prefix)
    kwargs, errors = {}, []
    for k, v in data.items():
        try:
            kwargs[k] = _check_type(prefix + k, v, hints[k])
        except ConfigError as e:
            errors.append(str(e))
    if errors:
        raise ConfigError("; ".join(errors))
    cfg = cls(**kwargs)
    if ranges:
        check_ranges(cfg, prefix)
    return cfg


def check_choices(cfg: Any, prefix: str = "") -> None:
    """ConfigError when a ``Literal`` field of a config dataclass (at any depth) holds another value.

    ``from_dict`` checks this when a config loads; this catches configs built directly in Python.
    """
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        value, tp = getattr(cfg, f.name), hints[f.name]
        if typing.get_origin(tp) is Literal:
            _check_choice(prefix + f.name, value, typing.get_args(tp))
        elif dataclasses.is_dataclass(value):
            check_choices(value, prefix + f.name + ".")


def _in_range(v: float, bound: Bound) -> bool:
    low, high, ends = bound
    above = v > low if ends[0] == "(" else v >= low
    below = high is None or (v < high if ends[-1] == ")" else v <= high)
    return above and below


def _range_text(bound: Bound) -> str:
    low, high, ends = bound
    if high is None:
        return f"{'>' if ends[0] == '(' else '>='} {low}"
    return f"in {ends[0]}{low}, {high}{ends[-1]}"


def _range_error(name: str, value: Any, bound: Bound) -> str | None:
    """The complaint about ``value`` (a number or a (low, high) pair) outside ``bound``; None if fine."""
    values = list(value) if isinstance(value, (tuple, list)) else [value]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return None  # a wrong type is from_dict's (or the caller's) business
    shown = values if isinstance(value, (tuple, list)) else value
    if not all(math.isfinite(v) for v in values):
        return f"{name} must be a finite number, got {shown}"
    if not all(_in_range(v, bound) for v in values):
        return f"{name} must be {_range_text(bound)}, got {shown}"
    if len(values) == 2 and values[0] > values[1]:
        return f"{name} must be [low, high] with low <= high, got {shown}"
    return None


def _cross_field_errors(cfg: TrainConfig) -> list[str]:
    """The settings that are fine alone but not together (or that torch would refuse later)."""
    errors = []
    if cfg.optimizer == "sgd" and cfg.nesterov and cfg.momentum == 0:
        errors.append(f"momentum must be > 0 with optimizer=sgd and nesterov=true, got {cfg.momentum}")
    dropout = cfg.model_args.get("dropout", 0.0) if isinstance(cfg.model_args, dict) else 0.0
    if not isinstance(dropout, (int, float)) or isinstance(dropout, bool):
        errors.append(f"model_args.dropout: expected a number, got {dropout!r}")
    elif (problem := _range_error("model_args.dropout", dropout, _FRACTION)) is not None:
        errors.append(problem)
    return errors


def _range_errors(cfg: Any, prefix: str) -> list[str]:
    """Every out-of-range complaint about ``cfg`` and the config dataclasses inside it."""
    errors = []
    bounds = RANGES.get(type(cfg), {})
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            errors += _range_errors(value, prefix + f.name + ".")
        elif f.name in bounds and (problem := _range_error(prefix + f.name, value, bounds[f.name])):
            errors.append(problem)
    if isinstance(cfg, TrainConfig):
        errors += [prefix + e for e in _cross_field_errors(cfg)]
    return errors


def check_ranges(cfg: Any, prefix: str = "") -> None:
    """ConfigError (one line, every problem) when a numeric field of a config dataclass, at any depth,
    is outside its range (``RANGES``). ``from_dict`` checks this when a config loads."""
    errors = _range_errors(cfg, prefix)
    if errors:
        raise ConfigError("; ".join(errors))


def to_dict(cfg: Any) -> dict[str, Any]:
    """A plain, YAML/JSON-safe dict of a config (tuples become lists)."""

    def plain(v: Any) -> Any:
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, list):
            return [plain(x) for x in v]
        return v

    return plain(dataclasses.asdict(cfg))


def _parse_value(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"cannot parse value {text!r}: {one_line(e)}") from None


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b=value`` strings (values parsed as YAML) to a nested dict."""
    out = dict(data)
    for item in overrides:
        item = item.removeprefix("--")
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        node = out
        for p in parts[:-1]:
            child = node.get(p)
            child = dict(child) if isinstance(child, dict) else {}
            node[p] = child
            node = child
        node[parts[-1]] = _parse_value(raw)
    return out


def resolve_config_path(path: str | Path) -> Path:
    """A file path, or the name of a config shipped with ferkit (``paper``, ``tuned``, ``cpu``)."""
    p = Path(path)
    if p.is_file():
        return p
    shipped = Path(__file__).parent / "configs" / (p.name if p.suffix == ".yaml" else p.name + ".yaml")
    if p.parent == Path(".") and shipped.is_file():
        return shipped
    names = sorted(f.stem for f in (Path(__file__).parent / "configs").glob("*.yaml"))
    raise ConfigError(f"config file not found: {p} (shipped configs: {', '.join(names)})")


def load_yaml(path: str | Path) -> dict[str, Any]:
    """A config file (or shipped config name) as a mapping; ConfigError when it cannot be read as one."""
    p = resolve_config_path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"{p}: not a UTF-8 text file (byte {e.object[e.start]:#04x} at offset {e.start})"
        ) from None
    except OSError as e:
        raise ConfigError(f"{p}: cannot read: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {one_line(e)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping at the top level")
    return data


def load_train_config(
    path: str | Path | None = None, overrides: list[str] | None = None, values: dict[str, Any] | None = None
) -> TrainConfig:
    """Defaults <- YAML file <- ``key=value`` overrides <- ``values`` (taken as they are, not parsed)."""
    data = load_yaml(path) if path else {}
    data = apply_overrides(data, overrides or [])
    data.update(values or {})
    return from_dict(TrainConfig, data)
