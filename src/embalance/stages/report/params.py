"""The `report:` section of params.yaml, checked."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from embalance.errors import ConfigError
from embalance.experiment.methods import BASE_METHODS, OPTIONS, SYNTHETIC_METHODS, MethodSpec, parse_method

from .names import (
    REBALANCING_METHODS,
    SAMPLE_METHODS,
    SELECT_BY,
)


def _not_allowed_reason(spec: MethodSpec) -> str:
    """Why a method does not fit a list of the report (synthetic, rebalancing, projection, separability)."""
    if spec.mixup or spec.refit:
        return (f"options (+{', +'.join(OPTIONS)}) act in training, not on the training rows, so `{spec.name}` has the rows of `{spec.base}`; "
                "the section on mixing and refitting compares each variant with its base")
    if spec.base in SYNTHETIC_METHODS:
        return f"`{spec.base}` makes synthetic samples"
    return {
        "none": "`none` neither rebalances nor adds rows",
        "random": "`random` oversampling copies real rows and makes no synthetic samples",
        "undersample": "`undersample` removes majority rows and adds none",
    }.get(spec.base, f"`{spec.base}` rebalances through the loss and adds no rows")


def _check_methods(value: Any, key: str, allowed: Sequence[str], what: str) -> list[str]:
    """A non-empty list of distinct method names, each in ``allowed``; the error names the bad one and why."""
    if not (isinstance(value, list) and value):
        raise ConfigError(f"`report.{key}` must be a non-empty list of {what} ({', '.join(allowed)}), but got {value!r}.")
    for m in value:
        try:
            spec = parse_method(m)
        except ConfigError as e:
            raise ConfigError(f"`report.{key}`: {e}") from e
        if m not in allowed:
            raise ConfigError(f"`report.{key}` must list {what} ({', '.join(allowed)}), but got {m!r}: {_not_allowed_reason(spec)}.")
    if len(set(value)) != len(value):
        raise ConfigError(f"`report.{key}` lists a method twice: {value!r}.")
    return value


def check_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """The `report:` section, checked; raises ConfigError naming the bad value and what is allowed."""
    rep = params.get("report")
    if not isinstance(rep, dict):
        raise ConfigError("params.yaml needs a `report:` section (a mapping) for the report stage.")
    alpha = rep.get("alpha")
    if not (isinstance(alpha, int | float) and not isinstance(alpha, bool) and 0 < alpha < 1):
        raise ConfigError(f"`report.alpha` must be a number between 0 and 1, but got {alpha!r}.")
    baselines = rep.get("baselines")
    if not (isinstance(baselines, list) and baselines):
        raise ConfigError(f"`report.baselines` must be a non-empty list of methods (e.g. none, random; any of {', '.join(BASE_METHODS)} with options), but got {baselines!r}.")
    for b in baselines:
        try:
            parse_method(b)
        except ConfigError as e:
            raise ConfigError(f"`report.baselines`: {e}") from e
    if len(set(baselines)) != len(baselines):
        raise ConfigError(f"`report.baselines` lists a method twice: {baselines!r}.")
    _check_methods(rep.get("synthetic"), "synthetic", SYNTHETIC_METHODS, "methods that make synthetic samples")
    _check_methods(rep.get("rebalancing"), "rebalancing", REBALANCING_METHODS, "plain rebalancing methods without synthetic samples")
    if rep.get("select_by") not in SELECT_BY:
        raise ConfigError(f"`report.select_by` must be one of {', '.join(SELECT_BY)} (what picks the best method of a group per size), but got {rep.get('select_by')!r}.")
    early = rep.get("early_epochs")
    if not (isinstance(early, int) and not isinstance(early, bool) and early >= 1):
        raise ConfigError(f"`report.early_epochs` must be an integer >= 1 (a fold whose kept epoch is at most this counts as stopped at the first epochs), but got {early!r}.")
    for section in ("projection", "separability"):
        sec = rep.get(section)
        if not isinstance(sec, dict):
            raise ConfigError(f"`report.{section}` must be a mapping, but got {sec!r}.")
        methods = sec.get("methods")
        if not isinstance(methods, list):
            raise ConfigError(f"`report.{section}.methods` must be a list of oversampling methods ({', '.join(SAMPLE_METHODS)}), but got {methods!r}.")
        if methods:
            _check_methods(methods, f"{section}.methods", SAMPLE_METHODS, "oversampling methods, which add minority rows")
        if params["augment"]["backend"] == "imblearn" and "vae" in methods:
            raise ConfigError(f"`report.{section}.methods` lists vae, which has no imbalanced-learn implementation; use `augment.backend: embalance` or drop it.")
        mp = sec.get("max_points")
        if not (isinstance(mp, int) and not isinstance(mp, bool) and mp >= 4):
            raise ConfigError(f"`report.{section}.max_points` must be an integer >= 4, but got {mp!r}.")
    sizes = [rep["projection"].get("size"), *(rep["separability"].get("sizes") or [])]
    if not isinstance(rep["separability"].get("sizes"), list) or any(not (isinstance(s, int) and not isinstance(s, bool) and s >= 2) for s in sizes):
        raise ConfigError(f"`report.projection.size` must be an integer >= 2 and `report.separability.sizes` a list of them, but got {rep['projection'].get('size')!r} and {rep['separability'].get('sizes')!r}.")
    perplexity = rep["projection"].get("perplexity")
    if not (isinstance(perplexity, int | float) and not isinstance(perplexity, bool) and perplexity > 0):
        raise ConfigError(f"`report.projection.perplexity` must be a number > 0, but got {perplexity!r}.")
    mtp = rep.get("min_test_per_class", 100)
    if not (isinstance(mtp, int) and not isinstance(mtp, bool) and mtp >= 1):
        raise ConfigError(f"`report.min_test_per_class` must be an integer >= 1 (a balanced test set with fewer rows of a class is flagged), but got {mtp!r}.")
    cv_folds = rep["separability"].get("cv_folds")
    if not (isinstance(cv_folds, int) and not isinstance(cv_folds, bool) and cv_folds >= 2):
        raise ConfigError(f"`report.separability.cv_folds` must be an integer >= 2, but got {cv_folds!r}.")
    return {**rep, "min_test_per_class": mtp}


