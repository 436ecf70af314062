"""The search space (``tune.space`` of params.yaml), the study of each minority size, and its sampler and pruner."""


from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import optuna

from embalance.errors import ConfigError
from embalance.experiment.methods import OPTIONS, parse_method
from embalance.experiment.recipe import n_draws
from embalance.params import TuneParams, section, set_values
from embalance.stages.tune.storage import _quiet_optuna


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


def parse_space(tune: TuneParams, size: int, n_folds: int) -> list[Dimension]:
    """The dimensions of ``tune.space`` (checked by the params schema), k_neighbors bounded by the minority size."""
    return [
        _bound_by_data(Dimension(key, d.type, low=d.low, high=d.high, log=d.log, choices=tuple(d.choices or ()), methods=tuple(d.methods or ())), size, n_folds)
        for key, d in tune.space.items()
    ]


def _bound_by_data(dim: Dimension, size: int, n_folds: int) -> Dimension:
    """k_neighbors must stay below the minority count of every fold's training part (a rule of the data, not the file)."""
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


def grid_configs(grid: Mapping[str, Sequence[Any]], dims: Sequence[Dimension], methods: Sequence[str]) -> list[dict[str, Any]]:
    """The fixed grid (``sampler: grid``): per method, the product of the grid values of the keys that apply to it."""
    known = {d.key: d for d in dims}
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
    draws: int = 1  # imbalance.draws: the objective is the mean over these draws of each draw's mean


def study_specs(params: Mapping[str, Any], dataset: str, sizes: Sequence[int] | None = None) -> list[StudySpec]:
    """Everything about the studies of a dataset, checked before any trial runs (``sizes`` replace ``tune.sizes``)."""
    if sizes:
        params = set_values(params, {"tune.sizes": list(sizes)}, source="the sizes to tune")
    tune: TuneParams = section(params, "tune")  # the schema's checks; what remains below depends on the data
    specs = []
    for size in tune.sizes:
        dims = tuple(parse_space(tune, size, params["cv"]["n_folds"]))
        grid = tuple(grid_configs(tune.grid, dims, tune.methods)) if tune.sampler == "grid" else ()
        draws = n_draws(params)
        name = tune.study_name.format(dataset=dataset, size=size, sampler=tune.sampler, draws=draws)
        specs.append(StudySpec(dataset, size, name, tune.storage, len(grid) if grid else tune.n_trials, tune.sampler, dims, tuple(tune.methods), grid, draws))
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


