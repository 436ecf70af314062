"""Reading `params.yaml`, applying `--set key=value` overrides, and checking every knob up front.

The file's shape is a typed schema (:class:`Params`: one pydantic model per section, ``extra="forbid"``), so a
misspelt key, a bool where an integer belongs or a value outside its set fails before any work starts, with a
one-line :class:`ConfigError` that names the key's dotted path, the bad value and what is allowed. Each stage
calls :func:`load_params` at the top of its ``main()``; it returns the checked values as a plain dict, exactly
the values the file holds (no defaults are filled in, no number changes type).
"""

from __future__ import annotations

import copy
import functools
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from embalance.errors import ConfigError
from embalance.experiment.methods import (
    BASE_METHODS,
    IMBLEARN_METHODS,
    OPTIONS,
    REBALANCING_METHODS,
    SAMPLE_METHODS,
    SYNTHETIC_METHODS,
    parse_method,
    why_not_rows,
)
from embalance.schema_text import SchemaText, article, did_you_mean

DEFAULT_PARAMS_FILE = "params.yaml"

Device = Literal["auto", "cpu", "cuda"]
Sampler = Literal["tpe", "random", "grid"]
SAMPLERS: tuple[str, ...] = get_args(Sampler)  # `embalance tune --sampler` offers these


# ------------------------------------------------------------------------------------------------ value types
def _number(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PydanticCustomError("number_type", "Input should be a number")
    return value


def _power_of_two(n: int) -> int:
    if n < 2 or n & (n - 1):
        raise ValueError(f"must be a power of two >= 2 (2, 4, 8, ...), but got {n!r}")
    return n


def _method(name: str) -> str:
    parse_method(name)  # its ConfigError (a ValueError) names the bad part and what is allowed
    return name


def _all_or_size(value: Any) -> Any:
    if value != "all" and (isinstance(value, bool) or not isinstance(value, int) or value < 2):
        raise ValueError(f"must be all or an integer >= 2, but got {value!r}")
    return value


def _non_blank(text: str) -> str:
    if not text.strip():
        raise ValueError(f"must be a non-empty name, but got {text!r}")
    return text


# int and float both stay what the file says (1 stays 1, 1.0 stays 1.0); bool and text are refused.
Number = Annotated[int | float, BeforeValidator(_number)]
PositiveNumber = Annotated[Number, Field(gt=0)]
NonNegativeNumber = Annotated[Number, Field(ge=0)]
PositiveInt = Annotated[StrictInt, Field(gt=0)]
NonNegativeInt = Annotated[StrictInt, Field(ge=0)]
MinoritySize = Annotated[StrictInt, Field(ge=2)]
PowerOfTwo = Annotated[StrictInt, AfterValidator(_power_of_two), Field(description="a power of two >= 2 (2, 4, 8, ...)")]
Name = Annotated[StrictStr, AfterValidator(_non_blank), Field(description="a non-empty name")]
Method = Annotated[StrictStr, AfterValidator(_method), Field(description="a method name (e.g. smote, smote+mixup+refit)")]
AllOrSize = Annotated[str | int, BeforeValidator(_all_or_size), Field(description="all or an integer >= 2")]
Seconds = Annotated[StrictInt | None, Field(ge=1, description="a whole number of seconds")]


def _no_repeats(values: list[Any], what: str) -> list[Any]:
    if len(set(map(repr, values))) != len(values):
        raise ValueError(f"lists {what} twice: {values!r}")
    return values


def _only(values: list[str], allowed: tuple[str, ...], what: str) -> list[str]:
    for m in values:
        if m not in allowed:
            raise ValueError(f"must list {what} ({', '.join(allowed)}), but got {m!r}: {why_not_rows(parse_method(m))}")
    return _no_repeats(values, "a method")


def distinct(what: str) -> AfterValidator:
    """A list may not hold a value twice: ``lists a size twice: [4, 4]``."""
    return AfterValidator(lambda values: _no_repeats(values, what))


def methods_in(allowed: tuple[str, ...], what: str) -> AfterValidator:
    """A list of distinct methods, each one of ``allowed``."""
    return AfterValidator(lambda values: _only(values, allowed, what))


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ------------------------------------------------------------------------------------------------ sections
class HubEntry(Section):
    path: Name
    train: Name
    test: Name
    text: Name = "text"
    label: Name = "label"
    name: Name | None = None  # the Hub dataset's configuration


class DataParams(Section):
    datasets: Annotated[list[Name], Field(min_length=1), distinct("a dataset")]
    mirror: StrictStr
    hub: dict[str, HubEntry] = {}  # a map: any dataset name is a key
    class_names: dict[str, list[StrictStr]] = {}
    max_train_per_class: PositiveInt | None = None
    max_test_per_class: PositiveInt | None = None


class EmbedParams(Section):
    model: Annotated[Name, Field(description="a model name or path")]
    max_length: PositiveInt
    batch_size: PositiveInt
    device: Device


class ImbalanceParams(Section):
    minority_classes: Annotated[list[Annotated[StrictInt, Field(ge=0, description="a class label (an integer)")]], Field(min_length=1), distinct("a class")]
    sizes: Annotated[list[PowerOfTwo], Field(min_length=1), distinct("a size")]
    majority_cap: PositiveInt | None
    draws: Annotated[StrictInt, Field(ge=1)] = 1  # independent draws of the pool per size; draw 0 is the single-draw protocol


class CvParams(Section):
    n_folds: Annotated[StrictInt, Field(ge=2)]


class VaeParams(Section):
    latent_dim: PositiveInt
    hidden_dim: PositiveInt
    beta: NonNegativeNumber
    epochs: PositiveInt
    lr: PositiveNumber
    batch_size: PositiveInt
    sample_from: Literal["prior", "posterior"]


class LogitAdjustedParams(Section):
    tau: NonNegativeNumber


class MixupParams(Section):
    alpha: PositiveNumber


class RefitParams(Section):
    epochs: PositiveInt
    lr: PositiveNumber
    reinit: StrictBool


class AugmentParams(Section):
    methods: Annotated[list[Method], Field(min_length=1), distinct("a method")]
    backend: Literal["embalance", "imblearn"]
    device: Device = "auto"
    k_neighbors: PositiveInt
    m_neighbors: PositiveInt
    borderline_kind: Literal["borderline-1", "borderline-2"]
    on_small_class: Literal["clip", "raise"]
    target: Literal["cut", "all"] = "cut"  # cut: imbalance.minority_classes; all: every class below the majority (imblearn's "auto")
    vae: VaeParams
    logit_adjusted: LogitAdjustedParams
    mixup: MixupParams
    refit: RefitParams

    @model_validator(mode="after")
    def _imblearn_has_the_methods(self) -> AugmentParams:
        if self.backend == "imblearn":
            for m in self.methods:
                if parse_method(m).base not in IMBLEARN_METHODS:
                    raise ValueError(
                        f"`augment.methods` lists {m!r}, which has no imbalanced-learn implementation; use `augment.backend: embalance` "
                        f"or drop it (imblearn has: {', '.join(IMBLEARN_METHODS)})"
                    )
        return self


class TrainParams(Section):
    hidden_dim: PositiveInt
    lr: PositiveNumber
    weight_decay: NonNegativeNumber
    batch_size: PositiveInt
    max_epochs: PositiveInt
    patience: PositiveInt
    early_stopping: StrictBool
    fixed_epochs: PositiveInt
    both_readings: StrictBool
    device: Device
    threads: NonNegativeInt
    engine: Literal["batched", "sequential"]
    max_models_per_group: PositiveInt
    max_group_bytes: PositiveInt


class ExportParams(Section):  # every key has a default: a missing one means that default
    method: Method = "smote"
    minority_size: AllOrSize = "all"  # all: every real training row of the prepared data
    use_best: StrictBool = True
    registered_model_prefix: Name = "embalance"
    encoder_graph: Literal["auto", "fused", "plain"] = "auto"
    intra_op_threads: NonNegativeInt = 1  # 0 = all CPUs
    parity_texts: NonNegativeInt = 0  # 0 = all test texts




class ProjectionParams(Section):
    methods: Annotated[list[Method], methods_in(SAMPLE_METHODS, "oversampling methods, which add minority rows")]
    size: MinoritySize
    max_points: Annotated[StrictInt, Field(ge=4)]
    perplexity: PositiveNumber


class SeparabilityParams(Section):
    methods: Annotated[list[Method], methods_in(SAMPLE_METHODS, "oversampling methods, which add minority rows")]
    sizes: list[MinoritySize]
    cv_folds: Annotated[StrictInt, Field(ge=2)]
    max_points: Annotated[StrictInt, Field(ge=4)]


class ReportParams(Section):
    alpha: Annotated[Number, Field(gt=0, lt=1)]
    baselines: Annotated[list[Method], Field(min_length=1), distinct("a method")]
    synthetic: Annotated[list[Method], Field(min_length=1), methods_in(SYNTHETIC_METHODS, "methods that make synthetic samples")]
    rebalancing: Annotated[list[Method], Field(min_length=1), methods_in(REBALANCING_METHODS, "plain rebalancing methods without synthetic samples")]
    select_by: Literal["validation", "test"]
    early_epochs: PositiveInt
    min_test_per_class: Annotated[StrictInt, Field(ge=1)] = 100  # a balanced test set with fewer rows per class gets a warning
    projection: ProjectionParams
    separability: SeparabilityParams


DASK_ADDRESS = re.compile(r"^([a-z][a-z0-9+.-]*://)?[^\s/:]+(:\d{1,5})?$")  # tcp://10.0.0.5:8786, tls://host:8786, host:8786


def _dask_address(value: str | None) -> str | None:
    if value is not None and not DASK_ADDRESS.match(value):
        raise ValueError(f"must be a Dask scheduler address such as tcp://10.0.0.5:8786 (or null: this machine only), but got {value!r}")
    return value


class ClusterParams(Section):  # every key has a default: a missing section means this machine only
    address: Annotated[StrictStr | None, AfterValidator(_dask_address)] = None  # null: DASK_SCHEDULER_ADDRESS, else this machine
    connect_timeout: Seconds = 30  # how long to wait for the scheduler, and for its first worker


class TrackingParams(Section):
    uri: StrictStr | None = None  # None: sqlite:///mlflow.db (MLFLOW_TRACKING_URI overrides either)
    experiment: Name


def _space_method(name: str) -> str:
    if name not in OPTIONS:
        try:
            parse_method(name)
        except ConfigError as e:
            raise ValueError(
                f"must be a method ({', '.join(BASE_METHODS)}), an option ({', '.join(OPTIONS)}: every method with it) "
                f"or a full name such as smote+mixup, but got {name!r}"
            ) from e
    return name


class SpaceEntry(Section):
    """One dimension of the search: ``int``/``float`` between low and high (optionally log), or ``categorical``."""

    type: Literal["int", "float", "categorical"]
    low: Number | None = None
    high: Number | None = None
    log: StrictBool = False
    choices: list[Any] | None = None
    methods: list[Annotated[StrictStr, AfterValidator(_space_method)]] | None = None  # none: every method

    @model_validator(mode="after")
    def _range_or_choices(self) -> SpaceEntry:
        if self.type == "categorical":
            if self.low is not None or self.high is not None or self.log:
                raise ValueError(f"is categorical: it takes `choices`, not low, high or log, but got low={self.low!r}, high={self.high!r}, log={self.log!r}")
            if not self.choices:
                raise ValueError(f"needs a non-empty list `choices`, but got {self.choices!r}")
        elif self.choices is not None:
            raise ValueError(f"is a {self.type} range: it takes low and high, not `choices`, but got choices={self.choices!r}")
        elif self.low is None or self.high is None or self.low > self.high:
            raise ValueError(f"needs numbers low <= high, but got low={self.low!r}, high={self.high!r}")
        elif self.type == "int" and not (isinstance(self.low, int) and isinstance(self.high, int)):
            raise ValueError(f"is an int dimension, so low and high must be integers, but got low={self.low!r}, high={self.high!r}")
        elif self.log and self.low <= 0:
            raise ValueError(f"is on a log scale, so low must be > 0, but got low={self.low!r}")
        return self

    def values(self) -> list[Any]:
        return list(self.choices or ()) if self.type == "categorical" else [self.low, self.high]


POSITIVE_KNOBS = frozenset({"k_neighbors", "m_neighbors", "latent_dim", "hidden_dim", "epochs", "batch_size", "max_epochs"})


class TuneParams(Section):
    sizes: Annotated[list[MinoritySize], Field(min_length=1), distinct("a size")]
    methods: Annotated[list[Method], Field(min_length=1), distinct("a method")]
    n_trials: PositiveInt
    sampler: Sampler
    pruner: Literal["wilcoxon", "none"]
    wilcoxon_p: Annotated[Number, Field(gt=0, le=1)] = 0.1
    n_startup_folds: NonNegativeInt = 2
    storage: Name
    study_name: Name = "{dataset}-n{size}-{sampler}"
    heartbeat_interval: Seconds = None
    grace_period: Seconds = None
    space: dict[str, SpaceEntry]  # a map: dotted params keys
    grid: dict[str, Annotated[list[Any], Field(min_length=1)]] = {}  # a map: keys of the space

    @field_validator("study_name")
    @classmethod
    def _placeholders(cls, name: str) -> str:
        try:
            name.format(dataset="d", size=2, sampler="tpe", draws=1)
        except (KeyError, IndexError, ValueError) as e:
            raise ValueError(f"may use only the fields {{dataset}}, {{size}}, {{sampler}} and {{draws}}, but got {name!r} ({type(e).__name__}: {e})") from e
        return name

    @field_validator("space")
    @classmethod
    def _space_keys(cls, space: dict[str, SpaceEntry]) -> dict[str, SpaceEntry]:
        if not space:
            raise ValueError(f"must map parameter keys to distributions and may not be empty, but got {space!r}")
        for key, dim in space.items():
            if not is_param_key(key):
                raise ValueError(
                    f"key {key!r} is not a parameter in params.yaml{did_you_mean(key, _leaf_keys())} "
                    "(use dotted keys, e.g. augment.k_neighbors or augment.vae.latent_dim)"
                )
            if key.rpartition(".")[2] in POSITIVE_KNOBS and any(not isinstance(v, int | float) or v <= 0 for v in dim.values()):
                raise ValueError(f"`tune.space.{key}` must hold values > 0, but got {dim.values()!r}")
        return space

    @model_validator(mode="after")
    def _heartbeat_and_grid(self) -> TuneParams:
        interval, grace = self.heartbeat_interval, self.grace_period
        if interval is not None and grace is not None and grace <= interval:
            raise ValueError(
                f"`tune.grace_period` must be longer than `tune.heartbeat_interval` (a live worker records one heartbeat per interval), "
                f"but got grace_period={grace} with heartbeat_interval={interval}"
            )
        for key in self.grid if self.sampler == "grid" else ():  # the grid is read only by the grid sampler
            if key not in self.space:
                raise ValueError(f"`tune.grid` key {key!r} is not in `tune.space`; grid keys must be space keys ({', '.join(self.space)})")
        return self


class Params(Section):
    """The whole of params.yaml. The stages' own sections (export, report, tune) may be missing until they run."""

    seed: StrictInt
    data: DataParams
    embed: EmbedParams
    imbalance: ImbalanceParams
    cv: CvParams
    augment: AugmentParams
    train: TrainParams
    export: ExportParams | None = None
    report: ReportParams | None = None
    tracking: TrackingParams
    tune: TuneParams | None = None
    cluster: ClusterParams | None = None

    @model_validator(mode="after")
    def _report_methods_exist(self) -> Params:
        if self.report is not None and self.augment.backend == "imblearn":
            for name in ("projection", "separability"):
                if "vae" in getattr(self.report, name).methods:
                    raise ValueError(f"`report.{name}.methods` lists vae, which has no imbalanced-learn implementation; use `augment.backend: embalance` or drop it")
        return self


# ------------------------------------------------------------------------------------------------ reading
def load_params(path: str | os.PathLike[str] = DEFAULT_PARAMS_FILE, overrides: Iterable[str] = ()) -> dict[str, Any]:
    """Read a params file, apply ``section.key=value`` overrides (values parsed as YAML) and validate.

    Returns the checked values as a plain dict: the file's keys and values, with the overrides set.
    """
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"Parameters file {str(path)!r} is a folder; pass the params.yaml file itself (--params FOLDER/params.yaml).")
    if not path.is_file():
        raise ConfigError(f"Parameters file {str(path)!r} does not exist; run from the project folder or pass --params.")
    try:
        with path.open(encoding="utf-8") as f:
            params = yaml.safe_load(f) or {}
    except OSError as e:
        raise ConfigError(f"Parameters file {str(path)!r} cannot be read ({e.strerror or e}); fix its permissions or pass another --params.") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"Parameters file {str(path)!r} is not UTF-8 text (byte {e.start}: {e.reason}); a params file is YAML.") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{str(path)!r} is not valid YAML: {_yaml_problem(e)}.") from None
    if not isinstance(params, dict):
        raise ConfigError(f"{str(path)!r} must hold a mapping of sections, but got {type(params).__name__}.")
    params = apply_overrides(params, overrides)
    return validate(params, source=path.name).model_dump(exclude_unset=True)


def validate(params: Mapping[str, Any], *, source: str = DEFAULT_PARAMS_FILE) -> Params:
    """Check ``params`` against the schema; return it typed, or raise ConfigError (one line per broken rule)."""
    try:
        return Params.model_validate(params)
    except ValidationError as e:
        # Unknown keys first: a misspelt key is usually also the reason a required one is missing.
        errors = sorted(e.errors(), key=lambda err: err["type"] != "extra_forbidden")
        messages = dict.fromkeys(_text().message(err, source).rstrip(".") for err in errors)
        raise ConfigError("; ".join(messages) + ".") from None


def section(params: Mapping[str, Any], name: Literal["export", "report", "tune"]) -> Any:
    """A stage's own section, checked with the rest of ``params``; ConfigError when it is missing."""
    checked = getattr(validate(params), name)
    if checked is None:
        raise ConfigError(f"params.yaml needs {article(name)} `{name}:` section (a mapping) for the {name} stage.")
    return checked


def apply_overrides(params: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Return a copy of ``params`` with each ``dotted.key=value`` override set (value parsed as YAML)."""
    out = copy.deepcopy(dict(params))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"An override must look like `section.key=value`, but got {item!r}.")
        key, raw = item.split("=", 1)
        source = f"--set {item}"
        if not all(part.strip() for part in key.split(".")):
            raise ConfigError(f"An override must look like `section.key=value` with a dotted key of non-empty names, but got the key {key!r} in {item!r}.")
        try:
            value = _parse_value(raw)
        except yaml.YAMLError as e:
            raise ConfigError(f"Override {item!r}: the value {raw!r} is not valid YAML: {_yaml_problem(e)}.") from None
        _set(out, key.strip(), value, source)
    return out


def set_values(params: Mapping[str, Any], values: Mapping[str, Any], *, source: str = "the values set") -> dict[str, Any]:
    """Return a copy of ``params`` with typed values set at dotted keys (no string round trip)."""
    out = copy.deepcopy(dict(params))
    for key, value in values.items():
        _set(out, key, value, source)
    return out


_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _parse_value(raw: str) -> Any:
    """YAML, except that number-like strings PyYAML leaves as text (``1e-7``: YAML 1.1 wants ``1.0e-7``) are numbers."""
    value = yaml.safe_load(raw)
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        return float(value)
    return value


def _yaml_problem(e: yaml.YAMLError) -> str:
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    mark = getattr(e, "problem_mark", None)
    return f"{problem} (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else problem


def _set(params: dict[str, Any], key: str, value: Any, source: str) -> None:
    """Set ``value`` at a dotted key that the schema knows; a new key is allowed only inside a map (class_names, hub)."""
    parts, text = key.split("."), _text()
    node, schema = params, text.schema
    for i, part in enumerate(parts):
        child = text.child(schema, part)
        if child is None:
            raise ConfigError(text.unknown(list(parts[:i]), part, source))
        if i == len(parts) - 1:
            node[part] = value
            return
        if not text.is_mapping(child):
            raise ConfigError(f"{source}: `{'.'.join(parts[: i + 1])}` is a value, not a section, so it has no key {parts[i + 1]!r}.")
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node, schema = node[part], child


@functools.cache
def _text() -> SchemaText:
    return SchemaText(Params.model_json_schema())


@functools.cache
def _leaf_keys() -> tuple[str, ...]:
    return _text().leaf_keys()


def is_param_key(key: str) -> bool:
    """Whether a dotted key names a value of params.yaml (e.g. ``augment.vae.latent_dim``), not a section or a map."""
    return key in _leaf_keys()
