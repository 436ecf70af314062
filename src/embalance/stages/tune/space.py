"""The search space (``tune.space`` of params.yaml), the study of each minority size, and its sampler and pruner."""


from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import optuna

from embalance.errors import ConfigError
from embalance.experiment.methods import BASE_METHODS, OPTIONS, parse_method
from embalance.stages.tune.storage import _quiet_optuna

SAMPLERS = ("tpe", "random", "grid")


PRUNERS = ("wilcoxon", "none")


KINDS = ("int", "float", "categorical")


# --------------------------------------------------------------------------------------------- search space
@dataclass(frozen=True)
class Dimension:
    key: str  # a dotted params key, e.g. "augment.k_neighbors"
    kind: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()
    methods: tuple[str, ...] = ()  # empty: every method; else method names, bases or options (mixup: any +mixup)

    def applies_to(self, method: str) -> bool:
        if not self.methods:
            return True
        spec = parse_method(method)
        return method in self.methods or spec.base in self.methods or any(getattr(spec, o) and o in self.methods for o in OPTIONS)

    def suggest(self, trial: optuna.Trial) -> Any:
        if self.kind == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high), log=self.log)  # type: ignore[arg-type]
        if self.kind == "float":
            return trial.suggest_float(self.key, float(self.low), float(self.high), log=self.log)  # type: ignore[arg-type]
        return trial.suggest_categorical(self.key, list(self.choices))


def min_training_minority(size: int, n_folds: int) -> int:
    """The fewest minority samples a fold's training part holds (stratified folds of a class of ``size``)."""
    return size - -(-size // n_folds)  # size minus the largest held-out share, ceil(size / n_folds)


def parse_space(tune: Mapping[str, Any], params: Mapping[str, Any], size: int) -> list[Dimension]:
    """Check ``tune.space`` against the params and the data, and bound k by the minority size. Raises ConfigError."""
    space = tune.get("space") or {}
    if not isinstance(space, dict) or not space:
        raise ConfigError(f"`tune.space` must map parameter keys to distributions and may not be empty, but got {space!r}.")
    dims: list[Dimension] = []
    for key, spec in space.items():
        if not _is_param(params, key):
            raise ConfigError(f"`tune.space` key {key!r} is not a parameter in params.yaml (use dotted keys, e.g. augment.k_neighbors or augment.vae.latent_dim).")
        kind = spec.get("type")
        if kind not in KINDS:
            raise ConfigError(f"`tune.space.{key}.type` must be one of {', '.join(KINDS)}, but got {kind!r}.")
        methods = tuple(spec.get("methods") or ())
        unknown = [m for m in methods if not _names_methods(m)]
        if unknown:
            raise ConfigError(
                f"`tune.space.{key}.methods` names unknown methods {unknown}; allowed: methods ({', '.join(BASE_METHODS)}), "
                f"their options ({', '.join(OPTIONS)}: every method with it) or full names such as smote+mixup."
            )
        if kind == "categorical":
            choices = tuple(spec.get("choices") or ())
            if not choices:
                raise ConfigError(f"`tune.space.{key}.choices` must be a non-empty list, but got {spec.get('choices')!r}.")
            dim = Dimension(key, kind, choices=choices, methods=methods)
        else:
            low, high = spec.get("low"), spec.get("high")
            if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (low, high)) or low > high:
                raise ConfigError(f"`tune.space.{key}` needs numbers low <= high, but got low={low!r}, high={high!r}.")
            if spec.get("log") and low <= 0:
                raise ConfigError(f"`tune.space.{key}` is on a log scale, so low must be > 0, but got low={low!r}.")
            dim = Dimension(key, kind, low=low, high=high, log=bool(spec.get("log")), methods=methods)
        dims.append(_bound_by_data(dim, size, params["cv"]["n_folds"]))
    return dims


def _names_methods(name: Any) -> bool:
    """A `methods:` entry of the space: a base method, an option, or a full method name."""
    if name in OPTIONS:
        return True
    try:
        parse_method(name)
    except ConfigError:
        return False
    return True


def _is_param(params: Mapping[str, Any], key: str) -> bool:
    """Whether a dotted key names a leaf value of params.yaml (e.g. ``augment.vae.latent_dim``)."""
    node: Any = params
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return not isinstance(node, dict)


def _bound_by_data(dim: Dimension, size: int, n_folds: int) -> Dimension:
    """k_neighbors must stay below the minority count of every fold's training part; sizes must be positive."""
    values = [dim.low, dim.high] if dim.kind != "categorical" else list(dim.choices)
    name = dim.key.rpartition(".")[2]
    if name in {"k_neighbors", "m_neighbors", "latent_dim", "hidden_dim", "epochs", "batch_size", "max_epochs"} and any(
        not isinstance(v, int | float) or v <= 0 for v in values
    ):
        raise ConfigError(f"`tune.space.{dim.key}` must hold values > 0, but got {values!r}.")
    if dim.key == "augment.k_neighbors":
        cap = min_training_minority(size, n_folds) - 1
        if dim.kind == "categorical":
            kept = tuple(v for v in dim.choices if v <= cap)
            if not kept:
                raise ConfigError(f"`tune.space.augment.k_neighbors` choices {list(dim.choices)} are all >= the {cap + 1} minority samples of a fold's training part at size {size}; choose k <= {cap}.")
            return Dimension(dim.key, dim.kind, choices=kept, methods=dim.methods)
        if dim.low > cap:
            raise ConfigError(
                f"`tune.space.augment.k_neighbors` low={dim.low} is not below the {cap + 1} minority samples of a fold's training part "
                f"at minority size {size} with {n_folds} folds; the range must start at most at {cap}."
            )
        return Dimension(dim.key, dim.kind, low=dim.low, high=min(dim.high, cap), log=dim.log, methods=dim.methods)
    return dim


def grid_configs(tune: Mapping[str, Any], dims: Sequence[Dimension], methods: Sequence[str]) -> list[dict[str, Any]]:
    """The fixed grid (``sampler: grid``): per method, the product of the grid values of the keys that apply to it."""
    grid = tune.get("grid") or {}
    known = {d.key: d for d in dims}
    for key in grid:
        if key not in known:
            raise ConfigError(f"`tune.grid` key {key!r} is not in `tune.space`; grid keys must be space keys ({', '.join(known)}).")
    configs = []
    for method in methods:
        keys = [k for k in grid if known[k].applies_to(method)]
        for values in itertools.product(*(grid[k] for k in keys)):
            configs.append({"method": method, **dict(zip(keys, values, strict=True))})
    return configs


# --------------------------------------------------------------------------------------------- the study
@dataclass(frozen=True)
class StudySpec:
    dataset: str
    size: int
    name: str
    storage: str
    n_trials: int
    sampler: str
    dims: tuple[Dimension, ...]
    methods: tuple[str, ...]
    grid: tuple[dict[str, Any], ...]


def study_specs(params: Mapping[str, Any], dataset: str, sizes: Sequence[int] | None = None) -> list[StudySpec]:
    """Everything about the studies of a dataset, checked before any trial runs."""
    tune = params["tune"]
    methods = tuple(tune.get("methods") or ())
    if not methods:
        raise ConfigError(f"`tune.methods` must be a non-empty list of methods, but got {tune.get('methods')!r}.")
    for m in methods:
        try:
            parse_method(m)
        except ConfigError as e:
            raise ConfigError(f"{e} (in `tune.methods`)") from e
    if tune.get("sampler") not in SAMPLERS:
        raise ConfigError(f"`tune.sampler` must be one of {', '.join(SAMPLERS)}, but got {tune.get('sampler')!r}.")
    if tune.get("pruner") not in PRUNERS:
        raise ConfigError(f"`tune.pruner` must be one of {', '.join(PRUNERS)}, but got {tune.get('pruner')!r}.")
    n_trials = tune.get("n_trials")
    if not isinstance(n_trials, int) or isinstance(n_trials, bool) or n_trials < 1:
        raise ConfigError(f"`tune.n_trials` must be an integer >= 1, but got {n_trials!r}.")
    for key in ("heartbeat_interval", "grace_period"):
        value = tune.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ConfigError(f"`tune.{key}` must be a whole number of seconds >= 1, or null, but got {value!r}.")
    interval, grace = tune.get("heartbeat_interval"), tune.get("grace_period")
    if interval is not None and grace is not None and grace <= interval:
        raise ConfigError(
            f"`tune.grace_period` must be longer than `tune.heartbeat_interval` (a live worker records one heartbeat per interval), "
            f"but got grace_period={grace} with heartbeat_interval={interval}."
        )
    specs = []
    for size in sizes or tune.get("sizes") or []:
        if not isinstance(size, int) or size < 2:
            raise ConfigError(f"`tune.sizes` must hold minority sizes >= 2, but got {size!r}.")
        dims = tuple(parse_space(tune, params, size))
        grid = tuple(grid_configs(tune, dims, methods)) if tune["sampler"] == "grid" else ()
        if tune["sampler"] == "grid" and not grid:
            raise ConfigError("`tune.sampler: grid` needs `tune.grid` with at least one value per key.")
        name = str(tune.get("study_name", "{dataset}-n{size}-{sampler}")).format(dataset=dataset, size=size, sampler=tune["sampler"])
        specs.append(StudySpec(dataset, size, name, tune["storage"], len(grid) if grid else n_trials, tune["sampler"], dims, methods, grid))
    if not specs:
        raise ConfigError("`tune.sizes` must list at least one minority size.")
    return specs


def make_sampler(kind: str, seed: int) -> optuna.samplers.BaseSampler:
    if kind == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=5)
    # Grid trials are enqueued with fixed parameters; "random" only fills what they do not fix.
    return optuna.samplers.RandomSampler(seed=seed)


def make_pruner(tune: Mapping[str, Any]) -> optuna.pruners.BasePruner:
    if tune["pruner"] == "wilcoxon":
        with _quiet_optuna():  # experimental in Optuna, used on purpose: the pruner made for CV folds
            return optuna.pruners.WilcoxonPruner(p_threshold=float(tune.get("wilcoxon_p", 0.1)), n_startup_steps=int(tune.get("n_startup_folds", 2)))
    return optuna.pruners.NopPruner()


def trial_config(trial: optuna.Trial, spec: StudySpec) -> dict[str, Any]:
    """The trial's method and the overrides that apply to it (the space is conditional on the method)."""
    method = trial.suggest_categorical("method", list(spec.methods))
    # On a fixed grid, the dimensions outside the grid keep their params.yaml values.
    dims = [d for d in spec.dims if d.applies_to(method) and (not spec.grid or any(d.key in g for g in spec.grid))]
    return {"method": method, **{d.key: d.suggest(trial) for d in dims}}


