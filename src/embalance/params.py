"""Reading `params.yaml`, applying `--set key=value` overrides, and checking every knob up front.

Each stage calls :func:`load_params` at the top of its ``main()`` and reads its own section. All rules are
checked here, before any work starts, so that a typo costs seconds rather than a half-finished sweep.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from embalance.errors import ConfigError
from embalance.experiment.methods import IMBLEARN_METHODS, parse_method

BACKENDS: tuple[str, ...] = ("embalance", "imblearn")
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")
ENGINES: tuple[str, ...] = ("batched", "sequential")
BORDERLINE_KINDS: tuple[str, ...] = ("borderline-1", "borderline-2")

DEFAULT_PARAMS_FILE = "params.yaml"


def load_params(path: str | os.PathLike[str] = DEFAULT_PARAMS_FILE, overrides: Iterable[str] = ()) -> dict[str, Any]:
    """Read a params file, apply ``section.key=value`` overrides (values parsed as YAML) and validate."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Parameters file {str(path)!r} does not exist; run from the project folder or pass --params.")
    with path.open() as f:
        params = yaml.safe_load(f) or {}
    if not isinstance(params, dict):
        raise ConfigError(f"{str(path)!r} must hold a mapping of sections, but got {type(params).__name__}.")
    params = apply_overrides(params, overrides)
    validate(params)
    return params


def apply_overrides(params: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Return a copy of ``params`` with each ``dotted.key=value`` override set (value parsed as YAML)."""
    out = copy.deepcopy(dict(params))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"An override must look like `section.key=value`, but got {item!r}.")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        node = out
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                raise ConfigError(f"Override {item!r}: {p!r} is not a section of params.yaml.")
            node = node[p]
        if parts[-1] not in node:
            known = ", ".join(sorted(node)) or "(none)"
            raise ConfigError(f"Override {item!r}: unknown key {key!r}; keys at this level: {known}.")
        node[parts[-1]] = _parse_value(raw)
    return out


def _parse_value(raw: str) -> Any:
    """YAML, except that number-like strings PyYAML leaves as text (``1e-7``: YAML 1.1 wants ``1.0e-7``) are numbers."""
    value = yaml.safe_load(raw)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def set_values(params: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """Return a copy of ``params`` with typed values set at dotted keys (no string round trip)."""
    out = copy.deepcopy(dict(params))
    for key, value in values.items():
        *parents, last = key.split(".")
        node = out
        for p in parents:
            if not isinstance(node.get(p), dict):
                raise ConfigError(f"{key!r}: {p!r} is not a section of params.yaml.")
            node = node[p]
        if last not in node:
            raise ConfigError(f"{key!r} is not a parameter in params.yaml.")
        node[last] = value
    return out


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _positive_number(section: str, key: str, value: Any, *, integer: bool = False, allow_zero: bool = False) -> None:
    ok_type = _is_int(value) if integer else (isinstance(value, int | float) and not isinstance(value, bool))
    ok_range = ok_type and (value >= 0 if allow_zero else value > 0)
    kind = "an integer" if integer else "a number"
    bound = ">= 0" if allow_zero else "> 0"
    _require(ok_range, f"`{section}.{key}` must be {kind} {bound}, but got {value!r}.")


def validate(params: Mapping[str, Any]) -> None:
    """Check every section that the stages read. Raises ConfigError naming the bad value and what is allowed."""
    for section in ("data", "embed", "imbalance", "cv", "augment", "train", "tracking"):
        _require(isinstance(params.get(section), dict), f"params.yaml needs a `{section}:` section (a mapping).")
    _require(_is_int(params.get("seed")), f"`seed` must be an integer, but got {params.get('seed')!r}.")

    data = params["data"]
    ds = data.get("datasets")
    _require(
        isinstance(ds, list) and len(ds) > 0 and all(isinstance(d, str) and d for d in ds),
        f"`data.datasets` must be a non-empty list of dataset names, but got {ds!r}.",
    )
    _require(len(set(ds)) == len(ds), f"`data.datasets` lists a dataset twice: {ds!r}.")
    for key in ("max_train_per_class", "max_test_per_class"):
        if data.get(key) is not None:
            _positive_number("data", key, data[key], integer=True)

    emb = params["embed"]
    _require(isinstance(emb.get("model"), str) and emb["model"], f"`embed.model` must be a model name or path, but got {emb.get('model')!r}.")
    _positive_number("embed", "max_length", emb.get("max_length"), integer=True)
    _positive_number("embed", "batch_size", emb.get("batch_size"), integer=True)
    _check_device("embed", emb.get("device"))

    imb = params["imbalance"]
    mc = imb.get("minority_classes")
    _require(
        isinstance(mc, list) and len(mc) > 0 and all(_is_int(c) and c >= 0 for c in mc),
        f"`imbalance.minority_classes` must be a non-empty list of class labels (integers >= 0), but got {mc!r}.",
    )
    sizes = imb.get("sizes")
    _require(isinstance(sizes, list) and len(sizes) > 0, f"`imbalance.sizes` must be a non-empty list, but got {sizes!r}.")
    for n in sizes:
        _require(
            _is_int(n) and n >= 2 and (n & (n - 1)) == 0,
            f"`imbalance.sizes` must hold powers of two >= 2 (2, 4, 8, ...), but got {n!r}.",
        )
    _require(len(set(sizes)) == len(sizes), f"`imbalance.sizes` lists a size twice: {sizes!r}.")
    if imb.get("majority_cap") is not None:
        _positive_number("imbalance", "majority_cap", imb["majority_cap"], integer=True)

    n_folds = params["cv"].get("n_folds")
    _require(_is_int(n_folds) and n_folds >= 2, f"`cv.n_folds` must be an integer >= 2, but got {n_folds!r}.")

    aug = params["augment"]
    methods = aug.get("methods")
    _require(isinstance(methods, list) and len(methods) > 0, f"`augment.methods` must be a non-empty list, but got {methods!r}.")
    specs = [parse_method(m) for m in methods]
    _require(len(set(methods)) == len(methods), f"`augment.methods` lists a method twice: {methods!r}.")
    _require(aug.get("backend") in BACKENDS, f"`augment.backend` must be one of {', '.join(BACKENDS)}, but got {aug.get('backend')!r}.")
    if aug["backend"] == "imblearn":
        for m, spec in zip(methods, specs, strict=True):
            _require(spec.base in IMBLEARN_METHODS, f"Method {m!r} has no imbalanced-learn implementation; use `augment.backend: embalance` or drop it (imblearn has: {', '.join(IMBLEARN_METHODS)}).")
    _require(aug.get("on_small_class") in ("clip", "raise"), f"`augment.on_small_class` must be clip or raise, but got {aug.get('on_small_class')!r}.")
    _check_device("augment", aug.get("device"))
    _require(aug.get("target") in ("cut", "all"), f"`augment.target` must be cut or all, but got {aug.get('target')!r}.")
    vae = aug.get("vae")
    _require(isinstance(vae, dict), "`augment.vae` must be a mapping of the VAE's settings.")
    for key in ("latent_dim", "hidden_dim", "epochs", "batch_size"):
        _positive_number("augment.vae", key, vae.get(key), integer=True)
    _positive_number("augment.vae", "lr", vae.get("lr"))
    _positive_number("augment.vae", "beta", vae.get("beta"), allow_zero=True)
    _require(vae.get("sample_from") in ("prior", "posterior"), f"`augment.vae.sample_from` must be prior or posterior, but got {vae.get('sample_from')!r}.")
    _positive_number("augment", "k_neighbors", aug.get("k_neighbors"), integer=True)
    _positive_number("augment", "m_neighbors", aug.get("m_neighbors"), integer=True)
    _require(
        aug.get("borderline_kind") in BORDERLINE_KINDS,
        f"`augment.borderline_kind` must be one of {', '.join(BORDERLINE_KINDS)}, but got {aug.get('borderline_kind')!r}.",
    )
    for sub in ("logit_adjusted", "mixup", "refit"):
        _require(isinstance(aug.get(sub), dict), f"`augment.{sub}` must be a mapping of its settings.")
    _positive_number("augment.logit_adjusted", "tau", aug["logit_adjusted"].get("tau"), allow_zero=True)
    _positive_number("augment.mixup", "alpha", aug["mixup"].get("alpha"))
    _positive_number("augment.refit", "epochs", aug["refit"].get("epochs"), integer=True)
    _positive_number("augment.refit", "lr", aug["refit"].get("lr"))
    _require(isinstance(aug["refit"].get("reinit"), bool), f"`augment.refit.reinit` must be true or false, but got {aug['refit'].get('reinit')!r}.")

    tr = params["train"]
    for key in ("hidden_dim", "batch_size", "max_epochs", "patience", "fixed_epochs"):
        _positive_number("train", key, tr.get(key), integer=True)
    for key in ("early_stopping", "both_readings"):
        _require(isinstance(tr.get(key), bool), f"`train.{key}` must be true or false, but got {tr.get(key)!r}.")
    _positive_number("train", "lr", tr.get("lr"))
    _positive_number("train", "weight_decay", tr.get("weight_decay"), allow_zero=True)
    _check_device("train", tr.get("device"))
    _positive_number("train", "threads", tr.get("threads"), integer=True, allow_zero=True)
    _require(tr.get("engine") in ENGINES, f"`train.engine` must be one of {', '.join(ENGINES)}, but got {tr.get('engine')!r}.")
    _positive_number("train", "max_models_per_group", tr.get("max_models_per_group"), integer=True)
    _positive_number("train", "max_group_bytes", tr.get("max_group_bytes"), integer=True)

    trk = params["tracking"]
    _require(isinstance(trk.get("experiment"), str) and trk["experiment"], f"`tracking.experiment` must be a name, but got {trk.get('experiment')!r}.")


def _check_device(section: str, value: Any) -> None:
    _require(value in DEVICES, f"`{section}.device` must be one of {', '.join(DEVICES)}, but got {value!r}.")


