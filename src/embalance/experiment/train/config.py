"""What a training run is told: the engine-independent settings (``TrainConfig``), a fold's options beyond plain
cross-entropy (``FoldOptions``) and what a fit returns (``FitResult``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from embalance.errors import ConfigError
from embalance.experiment.model import MLP
from embalance.runtime import available_cpus


@dataclass(frozen=True)
class TrainConfig:
    hidden_dim: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 64
    max_epochs: int = 50
    patience: int = 5
    device: str = "auto"
    # CPU threads. batched: groups trained at once, one thread each (torch's intra-op threads are set to 1);
    # sequential: torch's intra-op threads. 0: one per available CPU (batched), torch's default (sequential).
    threads: int = 0
    engine: str = "batched"  # batched: many folds in lockstep (embalance.batched) | sequential: one fold at a time
    max_models_per_group: int = 5  # batched: folds trained together (per worker)
    max_group_bytes: int = 2**31  # batched: data of one group (training rows + padded validation rows)
    early_stopping: bool = True  # the fold's model: best-validation-loss weights (es) or those after fixed_epochs
    fixed_epochs: int = 20  # the fixed budget
    both_readings: bool = True  # train until both readings are known and keep both

    @property
    def workers(self) -> int:
        """Groups the batched engine trains at once: ``threads``, or one per available CPU."""
        return self.threads or available_cpus()

    @property
    def primary(self) -> str:
        return "es" if self.early_stopping else "fixed"

    @property
    def readings(self) -> tuple[str, ...]:
        """The readings a fit produces: both, or only the primary one."""
        return ("es", "fixed") if self.both_readings else (self.primary,)

    @property
    def horizon(self) -> int:
        """Epochs a fold may need: until early stopping has decided (at most max_epochs) and fixed_epochs."""
        return max(self.max_epochs if "es" in self.readings else 0, self.fixed_epochs if "fixed" in self.readings else 0)

    @classmethod
    def from_params(cls, section: dict[str, Any]) -> TrainConfig:
        return cls(**{k: section[k] for k in cls.__dataclass_fields__ if k in section})


LOSSES: tuple[str, ...] = ("ce", "weighted", "logit_adjusted")


@dataclass(frozen=True)
class FoldOptions:
    """How one fold trains beyond plain cross-entropy: the method's loss, and mixup."""

    loss: str = "ce"  # ce | weighted | logit_adjusted
    tau: float = 1.0  # logit_adjusted: the adjustment's scale
    mixup_alpha: float = 0.0  # 0: no mixup
    n_real: int | None = None  # mixup partners come from training rows [0, n_real): the real ones (synthetic rows follow)
    mixup_seed: int = 0

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ConfigError(f"`loss` must be one of {', '.join(LOSSES)}, but got {self.loss!r}.")
        if self.mixup_alpha < 0:
            raise ConfigError(f"`mixup_alpha` must be >= 0 (0: no mixup), but got {self.mixup_alpha!r}.")

    def check_rows(self, n_train: int) -> None:
        """Refuse options that do not fit a fold of ``n_train`` training rows (mixup's ``n_real``); both engines call it."""
        if self.mixup_alpha > 0 and not (self.n_real is None or 1 <= self.n_real <= n_train):
            raise ConfigError(f"`n_real` must be between 1 and the {n_train} training rows, but got {self.n_real}.")


PLAIN = FoldOptions()


@dataclass
class FitResult:
    model: MLP  # the primary reading's weights (TrainConfig.early_stopping)
    best_epoch: int  # 1-based epoch with the lowest validation loss, as early stopping saw it (0: none)
    epochs_run: int
    history: dict[str, list[float]] = field(default_factory=dict)  # per epoch: train_loss, val_loss, val_balanced_accuracy
    readings: dict[str, MLP] = field(default_factory=dict)  # "es" and/or "fixed" -> weights
    stop_epoch: int = 0  # the epoch at which early stopping stopped (or the last one run)
    fixed_epochs: int = 0  # the epoch of the fixed reading
