"""Method names: the paper's oversamplers, the rebalancing baselines and the SYNAuG-style options.

A method is ``<base>[+mixup][+refit]``; :func:`parse_method` turns a name into a :class:`MethodSpec`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from embalance.errors import ConfigError

METHODS: tuple[str, ...] = ("none", "random", "smote", "borderline", "adasyn", "vae")  # the paper's


BASELINES: tuple[str, ...] = ("undersample", "weighted", "logit_adjusted")  # rebalancing without synthetic samples
BASE_METHODS: tuple[str, ...] = METHODS + BASELINES


OPTIONS: tuple[str, ...] = ("mixup", "refit")  # SYNAuG-style training options: `<base>+mixup`, `<base>+refit`, both
SYNTHETIC_METHODS: tuple[str, ...] = ("smote", "borderline", "adasyn", "vae")
SAMPLE_METHODS: tuple[str, ...] = ("random", *SYNTHETIC_METHODS)  # methods that add minority rows (projection, separability)
REBALANCING_METHODS: tuple[str, ...] = ("random", *BASELINES)  # rebalancing without synthetic samples


IMBLEARN_METHODS: tuple[str, ...] = ("none", "random", "smote", "borderline", "adasyn", *BASELINES)  # bases with no embalance sampler
@dataclass(frozen=True)
class MethodSpec:
    """A method name parsed: ``smote+mixup+refit`` -> base ``smote``, mixup on, last-layer refit on."""

    base: str
    mixup: bool = False
    refit: bool = False

    @property
    def name(self) -> str:
        """The canonical name: the base, then the options in the order of OPTIONS."""
        return "+".join([self.base, *(o for o in OPTIONS if getattr(self, o))])

    @property
    def loss(self) -> str:
        """The training loss: class-weighted or logit-adjusted cross-entropy for those baselines, else plain."""
        return self.base if self.base in ("weighted", "logit_adjusted") else "ce"

    @property
    def sampler(self) -> str:
        """What resamples the training part: an oversampler, ``undersample``, or ``none`` (the loss baselines)."""
        return "none" if self.base in ("weighted", "logit_adjusted") else self.base


def parse_method(name: Any) -> MethodSpec:
    """Parse ``<base>[+mixup][+refit]``; raises ConfigError naming the bad part and what is allowed."""
    if not isinstance(name, str) or not name:
        raise ConfigError(f"A method must be a name like `smote` or `smote+mixup+refit`, but got {name!r}.")
    base, *opts = name.split("+")
    if base not in BASE_METHODS:
        raise ConfigError(f"Unknown method {base!r} in {name!r}; known methods: {', '.join(BASE_METHODS)} (options: +{', +'.join(OPTIONS)}).")
    for o in opts:
        if o not in OPTIONS:
            raise ConfigError(f"Unknown option {o!r} in method {name!r}; options: {', '.join(OPTIONS)} (e.g. smote+mixup+refit).")
    if len(set(opts)) != len(opts):
        raise ConfigError(f"Method {name!r} repeats an option.")
    spec = MethodSpec(base, mixup="mixup" in opts, refit="refit" in opts)
    if spec.name != name:
        raise ConfigError(f"Write method {name!r} as {spec.name!r} (options in the order {'+'.join(OPTIONS)}), so that each method has one name.")
    return spec


def why_not_rows(spec: MethodSpec) -> str:
    """Why a method does not fit a list of the report's (synthetic, rebalancing, projection, separability)."""
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


def run_params(params: Mapping[str, Any], dataset: str, method: str, size: int | str, draw: int | None = 0) -> dict[str, Any]:
    """The MLflow params of a run that trains ``method`` (a cell, a trial, a final evaluation, an export): what defines
    it (dataset, method and its parts, size, draw; ``draw=None`` for runs over every draw), then every params.yaml
    value it uses, under its params.yaml key (``train.lr``, ``augment.vae.latent_dim``), so that one column in
    MLflow's UI means one setting whichever kind of run it is on."""
    aug = params["augment"]
    spec = parse_method(method)
    out: dict[str, Any] = {
        "dataset": dataset,
        "method": method,
        "base_method": spec.base,
        "mixup": spec.mixup,
        "last_layer_refit": spec.refit,
        "loss": spec.loss,
        "minority_size": size,
        **({"draw": draw} if draw is not None else {"imbalance.draws": params["imbalance"].get("draws", 1)}),
        "seed": params["seed"],
        "imbalance.minority_classes": params["imbalance"]["minority_classes"],
        "imbalance.majority_cap": params["imbalance"]["majority_cap"],
        "cv.n_folds": params["cv"]["n_folds"],
        "augment.backend": aug["backend"],
    }
    used = ["target"]
    if spec.base in ("smote", "borderline", "adasyn"):
        used += ["k_neighbors", "on_small_class"]
    if spec.base == "borderline":
        used += ["m_neighbors", "borderline_kind"]
    out.update({f"augment.{k}": aug[k] for k in used if k in aug})
    sections = [("logit_adjusted", spec.base == "logit_adjusted"), ("mixup", spec.mixup), ("refit", spec.refit), ("vae", spec.base == "vae")]
    for section, uses in sections:
        if uses:
            out.update({f"augment.{section}.{k}": v for k, v in aug[section].items()})
    out.update({f"train.{k}": v for k, v in params["train"].items()})
    return out
