"""What each configuration field allows, and the checks that enforce it.

The choice lists are the names the modules using these fields accept. :func:`validate` checks a finished
config dataclass against its fields' types and :data:`_RULES`; :func:`apply_overrides` (dotted changes) and
:func:`from_dict` (a saved dict) build one, type-checking each value.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .profiles import PROFILES

# The names the modules using these fields accept, defined once here (raw, stitch, backbones, descriptors,
# matching and training import them).
DEMOSAICKERS = ("demosaicnet", "bilinear", "malvar")
DENOISERS = ("ffdnet", "bilateral", "none")
STORE_DTYPES = ("float16", "float32")
SEAM_SCORES = ("normalised", "paper")
BACKBONES = ("dinov2_vits14", "vgg19", "vgg16_offline")
CASTS = ("none", "grey_world", "channel_norm")
MATCH_METHODS = ("ot", "unbalanced", "knn", "random")
IMAGE_LEVELS = ("paper", "tempered", "candidates", "marginal")
KNN_SCOPES = ("global", "top_images")
KNN_WEIGHTINGS = ("uniform", "softmax")
PAIRINGS = ("ot", "ot_paper", "unbalanced", "knn", "random", "paired")
RANDOMNESS = ("split", "order", "targets", "crops", "init", "validation")
"""What a training seed draws (``TrainConfig.fixed_randomness``): the held-out scenes, each epoch's visiting order,
pseudo-targets and crop windows, the colour network's first convolution, the held-out pseudo-targets."""
CHECKPOINT_RULES = ("auto", "pseudo_loss", "paired_loss", "colour_distance")
PHOTO_SOURCES = ("wheels", "debian")

SEED_MAX = 2**32 - 1
"""Largest seed: ``np.random.seed`` (in :func:`isp_support.runs.seed_everything`) takes 0 .. 2**32 - 1."""
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")
"""Device names, case-sensitive as torch's are (``torch.device('CPU')`` fails)."""


class ConfigError(ValueError):
    """A configuration value is unknown, of the wrong type or outside its allowed values."""


def validate(cfg: Any) -> Any:
    """Check every field of a config dataclass, sections included, against its type and allowed values.

    Returns ``cfg`` unchanged; raises :class:`ConfigError` naming the first bad field
    and what it allows.
    """
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        value = check(getattr(cfg, f.name), hints[f.name], f"{type(cfg).__name__}.{f.name}")
        if dataclasses.is_dataclass(value):
            validate(value)
    return cfg


# --- allowed values ----------------------------------------------------------


@dataclass(frozen=True)
class _Rule:
    """What a field takes beyond its type: ``ok`` tests a type-checked value, ``allowed`` says it in words."""

    ok: Callable[[Any], bool]
    allowed: str


def _one_of(names: tuple[str, ...]) -> _Rule:
    return _Rule(lambda v: v in names, "one of " + ", ".join(names))


def _ints(low: int, high: int | None = None) -> _Rule:
    if high is None:
        return _Rule(lambda v: v >= low, f"an integer >= {low}")
    return _Rule(lambda v: low <= v <= high, f"an integer in [{low}, {high}]")


def _numbers(low: float, strict: bool = False) -> _Rule:
    """Numbers above ``low`` (``strict``) or at least ``low``; :func:`_coerce` has refused NaN and inf."""
    return _Rule(lambda v: v > low if strict else v >= low, f"a number {'>' if strict else '>='} {low:g}")


def _unit(open_high: bool = False) -> _Rule:
    return _Rule(lambda v: 0 <= v < 1 if open_high else 0 <= v <= 1, f"a number in [0, 1{')' if open_high else ']'}")


def _optional(rule: _Rule) -> _Rule:
    return _Rule(lambda v: v is None or rule.ok(v), f"None or {rule.allowed}")


def _each(rule: _Rule, allowed: str) -> _Rule:
    return _Rule(lambda v: all(rule.ok(x) for x in v), allowed)


_POSITIVE_INT, _COUNT, _WEIGHT, _POSITIVE = _ints(1), _ints(0), _numbers(0), _numbers(0, strict=True)
_SEED = _ints(0, SEED_MAX)
_PATH = _Rule(lambda v: bool(v.strip()), "a non-empty path")
_NAME = _Rule(lambda v: bool(v.strip()), "a non-empty name")

_RULES: dict[str, _Rule] = {
    "Config.profile": _one_of(PROFILES), "Config.data_dir": _PATH, "Config.run_dir": _PATH, "Config.seed": _SEED,
    "Config.device": _Rule(lambda v: DEVICE_PATTERN.fullmatch(v) is not None, "one of auto, cpu, cuda, cuda:N"),
    "DatasetConfig.raw_patch": _POSITIVE_INT,
    "DatasetConfig.grids": _Rule(lambda v: bool(v) and all(min(g) >= 1 for g in v),
                                 "a non-empty sequence of (rows, cols) pairs of integers >= 1"),
    "DatasetConfig.photo_sources": _each(_one_of(PHOTO_SOURCES), f"names each {_one_of(PHOTO_SOURCES).allowed}"),
    "DatasetConfig.split_fractions": _Rule(lambda v: min(v) >= 0 and sum(v) > 0,
                                           "three numbers >= 0 with a positive sum"),
    "DatasetConfig.max_photos": _optional(_POSITIVE_INT), "DatasetConfig.jpeg_quality": _ints(0, 100),
    "DatasetConfig.crops_per_photo": _POSITIVE_INT, "DatasetConfig.target_crops_per_photo": _optional(_POSITIVE_INT),
    "PreprocessConfig.black_level": _WEIGHT, "PreprocessConfig.white_level": _POSITIVE,
    "PreprocessConfig.wb_gains": _each(_POSITIVE, "three numbers > 0"),
    "PreprocessConfig.demosaicker": _one_of(DEMOSAICKERS), "PreprocessConfig.denoiser": _one_of(DENOISERS),
    "PreprocessConfig.noise_sigma": _WEIGHT, "PreprocessConfig.gamma": _POSITIVE,
    "PreprocessConfig.batch_size": _POSITIVE_INT, "PreprocessConfig.store_dtype": _one_of(STORE_DTYPES),
    "StitchConfig.border": _POSITIVE_INT, "StitchConfig.score": _one_of(SEAM_SCORES),
    "StitchConfig.low_confidence_ratio": _numbers(1),
    "EmbedConfig.semantic_backbone": _one_of(BACKBONES), "EmbedConfig.style_backbone": _one_of(BACKBONES),
    "EmbedConfig.weights_dir": _PATH, "EmbedConfig.dinov2_weights": _optional(_PATH),
    "EmbedConfig.vgg19_weights": _optional(_PATH), "EmbedConfig.image_side": _POSITIVE_INT,
    "EmbedConfig.patch_side": _POSITIVE_INT, "EmbedConfig.weight_semantic": _WEIGHT,
    "EmbedConfig.weight_style": _WEIGHT, "EmbedConfig.weight_colour": _WEIGHT, "EmbedConfig.style_dim": _POSITIVE_INT,
    "EmbedConfig.patch_colour_weight": _WEIGHT, "EmbedConfig.cast": _one_of(CASTS),
    "EmbedConfig.batch_size": _POSITIVE_INT,
    "MatchConfig.method": _one_of(MATCH_METHODS), "MatchConfig.alpha": _unit(), "MatchConfig.epsilon": _POSITIVE,
    "MatchConfig.unbalanced_tau": _POSITIVE, "MatchConfig.top_images": _POSITIVE_INT,
    "MatchConfig.top_patches": _POSITIVE_INT, "MatchConfig.image_level": _one_of(IMAGE_LEVELS),
    "MatchConfig.image_gamma": _WEIGHT, "MatchConfig.image_epsilon": _optional(_POSITIVE),
    "MatchConfig.image_tau": _optional(_POSITIVE), "MatchConfig.max_iter": _POSITIVE_INT,
    "MatchConfig.tol": _POSITIVE, "MatchConfig.outer_max_iter": _POSITIVE_INT, "MatchConfig.outer_tol": _POSITIVE,
    "MatchConfig.overrelax": _Rule(lambda v: 0 < v < 2, "a number in (0, 2)"),
    "MatchConfig.max_chunk_bytes": _POSITIVE_INT, "MatchConfig.knn_scope": _one_of(KNN_SCOPES),
    "MatchConfig.knn_weighting": _one_of(KNN_WEIGHTINGS),
    "TrainConfig.pairing": _one_of(PAIRINGS), "TrainConfig.paired_loss": _one_of(("pal", "l1")),
    "TrainConfig.head": _one_of(("1x1", "lut")), "TrainConfig.hidden": _POSITIVE_INT,
    "TrainConfig.epochs": _POSITIVE_INT, "TrainConfig.batch_size": _POSITIVE_INT, "TrainConfig.lr": _POSITIVE,
    **{f"TrainConfig.{name}": _WEIGHT for name in ("weight_decay", "mom", "luma", "chroma", "gram", "tv")},
    "TrainConfig.moment": _one_of(("batch", "pair")), "TrainConfig.gram_reduction": _one_of(("mean", "sum")),
    "TrainConfig.gram_scale": _optional(_POSITIVE), "TrainConfig.crop": _optional(_POSITIVE_INT),
    "TrainConfig.gram_layers": _optional(_Rule(lambda v: len(v) > 0, "one or more layer names")),
    "TrainConfig.val_fraction": _unit(), "TrainConfig.val_max_patches": _POSITIVE_INT,
    "TrainConfig.target_ref_patches": _POSITIVE_INT, "TrainConfig.checkpoint_rule": _one_of(CHECKPOINT_RULES),
    "TrainConfig.patience": _optional(_POSITIVE_INT), "TrainConfig.schedule": _one_of(("none", "cosine")),
    "TrainConfig.ema": _optional(_unit(open_high=True)), "TrainConfig.workers": _COUNT, "TrainConfig.samples": _COUNT,
    "TrainConfig.fixed_randomness": _each(_one_of(RANDOMNESS), f"names each {_one_of(RANDOMNESS).allowed}"),
    "Stage2Config.epochs": _POSITIVE_INT, "Stage2Config.lr": _POSITIVE, "Stage2Config.d_lr": _POSITIVE,
    "Stage2Config.adv": _WEIGHT, "Stage2Config.mom": _WEIGHT, "Stage2Config.tv": _WEIGHT,
    "Stage2Config.discriminator": _one_of(("unet", "experts")), "Stage2Config.d_features": _POSITIVE_INT,
    "Stage2Config.expert_weights": _each(_WEIGHT, "three numbers >= 0"),
    "EvalConfig.split": _NAME, "EvalConfig.submission_format": _one_of(("png", "jpeg")),
    "EvalConfig.submission_splits": _each(_NAME, "split names"),
    "EvalConfig.seeds": _each(_SEED, f"seeds each {_SEED.allowed}"),
    "EvalConfig.tile": _Rule(lambda v: v is None or v == "auto" or (isinstance(v, int) and v >= 1),
                             "None, 'auto' or an integer >= 1"),
    "EvalConfig.timing_side": _POSITIVE_INT, "EvalConfig.timing_repeats": _POSITIVE_INT,
    "EvalConfig.bootstrap": _POSITIVE_INT,
}
"""Allowed values of each ``Class.field`` beyond its type (fields not named here take any value of their type)."""


# --- type checks -------------------------------------------------------------

MAX_OVERRIDES_BYTES = 64 << 10


def parse_overrides(text: str, where: str = "OVERRIDES") -> dict[str, Any]:
    """A JSON object of dotted config fields (``'{"train.epochs": 1}'``), checked for shape only (values are
    type-checked when applied). Lists stand for tuples. Bounded in size and nesting, so hostile text fails with
    a :class:`ConfigError` naming ``where``, never a RecursionError."""
    if len(text.encode()) > MAX_OVERRIDES_BYTES:
        raise ConfigError(f"{where}: {len(text.encode())} bytes of overrides, more than {MAX_OVERRIDES_BYTES}")
    if text.count("[") + text.count("{") > 1000:
        raise ConfigError(f"{where}: overrides nested too deeply")
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ConfigError(f"{where}: not a JSON object of dotted config fields ({exc})") from None
    if not isinstance(data, dict) or not all(isinstance(k, str) and k for k in data):
        raise ConfigError(f"{where}: expected a JSON object such as {{\"train.epochs\": 1}}, got {text[:80]!r}")
    return data


def field_values(pairs: list[str]) -> dict[str, object]:
    """``FIELD=VALUE`` pairs (``run-series --set``) as dotted overrides: VALUE parsed as JSON when it is JSON,
    else kept as text."""
    changes: dict[str, object] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"--set {pair!r}: expected FIELD=VALUE, e.g. train.epochs=2")
        try:
            changes[name.strip()] = json.loads(text)
        except (json.JSONDecodeError, RecursionError):
            changes[name.strip()] = text
    return changes


def explicit_or_env(explicit: dict[str, Any], env: typing.Mapping[str, str],
                    env_vars: dict[str, str]) -> dict[str, Any]:
    """The explicit values that are not ``None``, else the environment's (``env_vars``: field name -> variable).

    A variable that is set but blank is refused rather than taken as unset; a seed
    given as text is parsed.
    """
    resolved: dict[str, Any] = {}
    for name, value in explicit.items():
        var = env_vars[name]
        if value is None and var in env:
            value = env[var]
            if not value.strip():
                raise ConfigError(f"environment variable {var} is set but blank; unset it or give a {name}")
        if value is not None:
            resolved[name] = str(value) if isinstance(value, os.PathLike) else value
    if isinstance(resolved.get("seed"), str):
        try:
            resolved["seed"] = int(resolved["seed"])
        except ValueError:
            raise ConfigError(f"Config.seed: expected {expected('Config.seed', 'an integer')}, "
                              f"got {resolved['seed']!r}") from None
    return resolved


def apply_overrides(cfg: Any, changes: dict[str, Any]) -> Any:
    """``cfg`` with top-level or dotted (``"dataset.raw_patch"``) fields changed, each value type-checked only."""
    nested: dict[str, dict[str, Any]] = {}
    direct: dict[str, Any] = {}
    for key, value in changes.items():
        head, _, rest = key.partition(".")
        if rest:
            nested.setdefault(head, {})[rest] = value
        else:
            direct[key] = value
    hints = typing.get_type_hints(type(cfg))
    names = {f.name for f in dataclasses.fields(cfg)}
    for key in list(direct) + list(nested):
        if key not in names:
            raise ConfigError(f"unknown config field {key!r} in {type(cfg).__name__}")
    for key, sub in nested.items():
        direct[key] = apply_overrides(getattr(cfg, key), sub)
    for key, value in direct.items():
        direct[key] = _coerce(value, hints[key], f"{type(cfg).__name__}.{key}")
    return dataclasses.replace(cfg, **direct)


def from_dict(cls: type, data: dict[str, Any]) -> Any:
    """A ``cls`` config dataclass from a dict (nested dicts become sections), type-checked; unknown keys refused."""
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            kwargs[f.name] = _coerce(data[f.name], hints[f.name], f"{cls.__name__}.{f.name}")
    unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise ConfigError(f"unknown config field(s) {sorted(unknown)} in {cls.__name__}")
    return cls(**kwargs)


def check(value: Any, hint: Any, where: str) -> Any:
    """``value`` type-checked by :func:`_coerce`, then checked against the allowed values in :data:`_RULES`."""
    value = _coerce(value, hint, where)
    rule = _RULES.get(where)
    if rule is not None and not rule.ok(value):
        raise ConfigError(f"{where}: expected {rule.allowed}, got {value!r}")
    return value


def expected(where: str, kind: str) -> str:
    """What ``where`` takes, for a type error: its rule's words, else the bare type ``kind``."""
    rule = _RULES.get(where)
    return rule.allowed if rule is not None else kind


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Check ``value`` against a type hint; lists become tuples, dicts become dataclasses, NaN and inf are refused."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        if isinstance(value, dict):
            return from_dict(hint, value)
        raise ConfigError(f"{where}: expected a {hint.__name__} or dict, got {value!r}")
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError("; ".join(dict.fromkeys(errors)))
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a sequence, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], where) for v in value)
        if len(args) != len(value):
            raise ConfigError(f"{where}: expected {len(args)} items, got {len(value)}")
        return tuple(_coerce(v, a, where) for v, a in zip(value, args))
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{where}: expected {expected(where, 'a finite number')}, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected {expected(where, 'an integer')}, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected {expected(where, 'a string')}, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    return value


def resolve_device(device: str) -> str:
    """Turn ``auto`` into ``cuda`` or ``cpu``; refuse a name ``Config.device`` does not allow, and ``cuda`` /
    ``cuda:N`` when torch sees no such GPU."""
    check(device, str, "Config.device")
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if device.startswith("cuda") and int(device.partition(":")[2] or 0) >= count:
        seen = f"torch sees {count} CUDA device(s)" if count else "no GPU is available (torch sees no CUDA device)"
        raise ConfigError(f"device {device!r} requested but {seen}; set DEVICE / ISP_DEVICE to 'cpu' or 'auto'")
    return device
