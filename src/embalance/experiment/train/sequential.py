"""Training the MLP on one fold: mini-batch Adam, early stopping on the held-out fold's loss.

Everything random (initialisation, batch order) comes from one ``torch.Generator`` seeded per fold, so a fold's
result depends on its data and seed only; mixup draws from its own seeded NumPy generator, so switching it on
leaves the initialisation and batch order of a fold unchanged.

Two readings of one training run (``TrainConfig.both_readings``): *es*, the weights of the epoch with the lowest
validation loss, early stopping with ``patience`` (up to ``max_epochs``); *fixed*, the weights after
``fixed_epochs`` epochs. A fold's weights up to an epoch do not depend on whether training goes on afterwards, so
one run that lasts until both are known gives exactly what two separate runs would. ``early_stopping`` picks which
reading is the fold's model (the other is kept in ``FitResult.readings``).

Beyond plain cross-entropy (``FoldOptions``, per fold):

- ``weighted``: class weights w_c = n / (K n_c) from the training part's counts (K classes present; sklearn's
  "balanced"); the loss is sum_i w_{y_i} l_i / sum_i w_{y_i} (``F.cross_entropy(weight=w)``).
- ``logit_adjusted``: the loss sees f(x) + tau * log(pi) with pi the training part's class priors (Menon et al.,
  2021); prediction uses f(x). A class absent from the training part gets the prior of half a sample.
- mixup (``mixup_alpha > 0``): each row x_i of a batch is mixed with a partner x_j drawn uniformly from the fold's
  *real* training rows, lam * x_i + (1 - lam) * x_j with soft labels mixed alike; one lam per batch,
  lam = max(l, 1 - l), l ~ Beta(alpha, alpha), so the batch row keeps the larger share and alpha -> 0 is no mixing.
  With soft targets t and class weights w the loss is -sum_i sum_c w_c t_ic log p_ic / sum_i sum_c w_c t_ic.

The validation loss that early stopping watches is the training loss's own form (weighted, logit-adjusted) on the
held-out fold, without mixup; validation balanced accuracy uses the plain f(x).
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
import torch.nn.functional as F

from embalance.errors import ConfigError
from embalance.experiment.metrics import balanced_accuracy
from embalance.experiment.model import MLP, MLPConfig
from embalance.experiment.train.config import PLAIN, FitResult, FoldOptions, TrainConfig
from embalance.experiment.train.losses import class_weights, logit_adjustment, mix, mixup_draws
from embalance.runtime import cpu_threads, resolve_device


def fit_mlp(
    X_train: torch.Tensor | np.ndarray,
    y_train: torch.Tensor | np.ndarray,
    X_val: torch.Tensor | np.ndarray,
    y_val: torch.Tensor | np.ndarray,
    *,
    n_classes: int,
    config: TrainConfig,
    seed: int,
    options: FoldOptions = PLAIN,
) -> FitResult:
    """Train one MLP; its readings are the lowest-validation-loss epoch's weights (early stopping with patience
    ``config.patience``) and/or the weights after ``config.fixed_epochs`` epochs."""
    with cpu_threads(config.threads):
        return _fit_mlp(X_train, y_train, X_val, y_val, n_classes=n_classes, config=config, seed=seed, options=options)


# _fit_mlp is one loop over epochs (~90 lines) on purpose: it is the reference the batched engine must match bit for
# bit, and it reads top to bottom in the order the random draws, the loss, early stopping and both readings happen.
def _fit_mlp(
    X_train: torch.Tensor | np.ndarray,
    y_train: torch.Tensor | np.ndarray,
    X_val: torch.Tensor | np.ndarray,
    y_val: torch.Tensor | np.ndarray,
    *,
    n_classes: int,
    config: TrainConfig,
    seed: int,
    options: FoldOptions,
) -> FitResult:
    device = resolve_device(config.device)
    Xt, yt, Xv, yv = (torch.as_tensor(a).to(device) for a in (X_train, y_train, X_val, y_val))
    Xt, Xv = Xt.float(), Xv.float()
    yt, yv = yt.long(), yv.long()
    options.check_rows(Xt.shape[0])
    gen = torch.Generator().manual_seed(seed)
    model = MLP(MLPConfig(in_dim=Xt.shape[1], hidden_dim=config.hidden_dim, n_classes=n_classes))
    model.reset_parameters(gen)
    model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    weight = class_weights(yt, n_classes).to(device) if options.loss == "weighted" else None
    adjust = logit_adjustment(yt, n_classes, options.tau).to(device) if options.loss == "logit_adjusted" else None
    mixing = options.mixup_alpha > 0
    rng = np.random.default_rng(options.mixup_seed) if mixing else None
    n_real = options.n_real or Xt.shape[0]
    onehot = torch.nn.functional.one_hot(yt, n_classes).float() if mixing else None

    def loss_fn(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits + adjust if adjust is not None else logits, y, weight=weight)

    history: dict[str, list[float]] = {"train_loss": [], "val_loss": [], "val_balanced_accuracy": []}
    best_loss, best_epoch, best_state = float("inf"), 0, copy.deepcopy(model.state_dict())
    es_done, stop_epoch, fixed_state = False, 0, None
    need_es, need_fixed = "es" in config.readings, "fixed" in config.readings
    n = Xt.shape[0]
    epoch = 0
    for epoch in range(1, config.horizon + 1):
        model.train()
        perm = torch.randperm(n, generator=gen).to(device)
        if rng is not None:
            lam, partner = mixup_draws(rng, options.mixup_alpha, -(-n // config.batch_size), n, n_real)
            lam_t, partner_t = torch.from_numpy(lam).to(device), torch.from_numpy(partner).to(device)
        total = torch.zeros((), device=device)
        for b, start in enumerate(range(0, n, config.batch_size)):
            idx = perm[start : start + config.batch_size]
            if onehot is None:
                loss = loss_fn(model(Xt[idx]), yt[idx])
            else:
                p = partner_t[start : start + config.batch_size]
                x, t = mix(Xt[idx], onehot[idx], Xt[p], onehot[p], lam_t[b])
                logits = model(x)
                u = t * weight if weight is not None else t
                logp = torch.log_softmax(logits + adjust if adjust is not None else logits, dim=1)
                loss = -(u * logp).sum() / u.sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach() * len(idx)
        model.eval()
        with torch.no_grad():
            logits = model(Xv)
            val_loss = float(loss_fn(logits, yv))
            val_bacc = balanced_accuracy(yv.cpu().numpy(), logits.argmax(1).cpu().numpy())
        history["train_loss"].append(float(total) / n)
        history["val_loss"].append(val_loss)
        history["val_balanced_accuracy"].append(val_bacc)
        if not es_done:
            if val_loss < best_loss:
                best_loss, best_epoch, best_state = val_loss, epoch, copy.deepcopy(model.state_dict())
            elif epoch - best_epoch >= config.patience:
                es_done, stop_epoch = True, epoch
            if epoch == config.max_epochs and not es_done:
                es_done, stop_epoch = True, epoch
        if epoch == config.fixed_epochs:
            fixed_state = copy.deepcopy(model.state_dict())
        if (es_done or not need_es) and (fixed_state is not None or not need_fixed):
            break
    states = {"es": best_state, "fixed": fixed_state if fixed_state is not None else copy.deepcopy(model.state_dict())}
    readings = {}
    for name in config.readings:
        m = MLP(model.config)
        m.load_state_dict(states[name])
        readings[name] = m.to(device).eval()
    return FitResult(
        model=readings[config.primary], best_epoch=best_epoch, epochs_run=epoch, history=history, readings=readings,
        stop_epoch=stop_epoch if es_done else epoch, fixed_epochs=min(config.fixed_epochs, epoch),
    )


def refit_last_layer(
    model: MLP,
    X: torch.Tensor | np.ndarray,
    y: torch.Tensor | np.ndarray,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    reinit: bool = False,
) -> MLP:
    """A copy of ``model`` whose output layer alone is re-fitted on (X, y) with Adam and plain cross-entropy.

    The hidden layer is copied bit for bit and never updated: its features are computed once, without gradients.
    ``reinit`` starts the output layer from a fresh initialisation (drawn from ``seed``) instead of its trained weights.
    """
    new = copy.deepcopy(model)
    device = next(new.parameters()).device
    X = torch.as_tensor(X).float().to(device)
    y = torch.as_tensor(y).long().to(device)
    if X.ndim != 2 or y.ndim != 1 or X.shape[0] != y.shape[0] or X.shape[0] == 0:
        raise ConfigError(f"refit needs X (n, d) and y (n,) with n >= 1, but got X {tuple(X.shape)} and y {tuple(y.shape)}.")
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        H = torch.relu(new.hidden(X))  # (n, hidden): frozen features
        if reinit:
            bound = 1.0 / math.sqrt(new.out.in_features)
            new.out.weight.copy_(torch.rand(new.out.weight.shape, generator=gen) * 2 * bound - bound)
            new.out.bias.copy_(torch.rand(new.out.bias.shape, generator=gen) * 2 * bound - bound)
    opt = torch.optim.Adam(new.out.parameters(), lr=lr)
    n = H.shape[0]
    new.train()
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen).to(device)
        for start in range(0, n, batch_size):
            idx = perm[start : start + batch_size]
            loss = F.cross_entropy(new.out(H[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return new.eval()


@torch.no_grad()
def predict_proba(model: MLP, X: torch.Tensor | np.ndarray) -> np.ndarray:
    device = next(model.parameters()).device
    logits = model(torch.as_tensor(X).float().to(device))
    return torch.softmax(logits, dim=1).cpu().numpy()
