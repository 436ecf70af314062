from __future__ import annotations

import numpy as np
import torch

from embalance.experiment.metrics import balanced_accuracy
from embalance.experiment.model import MLP, MLPConfig
from embalance.experiment.train import TrainConfig, fit_mlp, predict_proba


def test_forward_shape_no_nan_and_every_parameter_gets_a_gradient() -> None:
    model = MLP(MLPConfig(in_dim=16, hidden_dim=8, n_classes=3))
    model.reset_parameters(torch.Generator().manual_seed(0))
    x = torch.randn(5, 16)
    out = model(x)
    assert out.shape == (5, 3) and torch.isfinite(out).all()
    torch.nn.functional.cross_entropy(out, torch.tensor([0, 1, 2, 0, 1])).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_checkpoint_round_trip() -> None:
    model = MLP(MLPConfig(in_dim=6, hidden_dim=4, n_classes=2))
    model.reset_parameters(torch.Generator().manual_seed(1))
    again = MLP.from_checkpoint(model.checkpoint())
    x = torch.randn(3, 6)
    assert torch.equal(model(x), again(x))
    assert again.config == MLPConfig(in_dim=6, hidden_dim=4, n_classes=2)


def _blobs(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = np.vstack([rng.normal(0, 1, (80, 8)), rng.normal(1.5, 1, (40, 8))]).astype(np.float32)
    return X, np.array([0] * 80 + [1] * 40)


def test_fit_is_deterministic_learns_and_keeps_best_epoch() -> None:
    X, y = _blobs()
    cfg = TrainConfig(hidden_dim=16, lr=0.01, batch_size=16, max_epochs=30, patience=3, device="cpu", both_readings=False)
    a = fit_mlp(X[::2], y[::2], X[1::2], y[1::2], n_classes=2, config=cfg, seed=5)
    b = fit_mlp(X[::2], y[::2], X[1::2], y[1::2], n_classes=2, config=cfg, seed=5)
    assert a.history == b.history and a.best_epoch == b.best_epoch
    assert all(torch.equal(p, q) for p, q in zip(a.model.parameters(), b.model.parameters(), strict=True))
    assert a.best_epoch == int(np.argmin(a.history["val_loss"])) + 1
    assert a.epochs_run == len(a.history["val_loss"]) <= cfg.max_epochs
    assert a.epochs_run == cfg.max_epochs or a.epochs_run - a.best_epoch == cfg.patience
    pred = predict_proba(a.model, X[1::2]).argmax(1)
    assert balanced_accuracy(y[1::2], pred) > 0.8
    c = fit_mlp(X[::2], y[::2], X[1::2], y[1::2], n_classes=2, config=cfg, seed=6)
    assert c.history != a.history


def test_both_readings_train_past_early_stopping_without_changing_it() -> None:
    X, y = _blobs()
    es = TrainConfig(hidden_dim=16, lr=0.01, batch_size=16, max_epochs=30, patience=3, device="cpu", both_readings=False)
    both = TrainConfig(hidden_dim=16, lr=0.01, batch_size=16, max_epochs=30, patience=3, device="cpu", fixed_epochs=25)
    a = fit_mlp(X[::2], y[::2], X[1::2], y[1::2], n_classes=2, config=es, seed=5)
    b = fit_mlp(X[::2], y[::2], X[1::2], y[1::2], n_classes=2, config=both, seed=5)
    assert a.epochs_run < 25 and b.epochs_run == 25 and b.stop_epoch == a.epochs_run and b.best_epoch == a.best_epoch
    assert b.history["val_loss"][: a.epochs_run] == a.history["val_loss"]  # the same run, continued
    assert all(torch.equal(p, q) for p, q in zip(a.model.parameters(), b.readings["es"].parameters(), strict=True))
    assert not torch.equal(b.readings["es"].out.weight, b.readings["fixed"].out.weight)
    assert b.fixed_epochs == 25 and b.model is b.readings["es"]


def test_balanced_accuracy_matches_sklearn() -> None:
    from sklearn.metrics import balanced_accuracy_score

    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 3, 50), rng.integers(0, 3, 50)
    assert abs(balanced_accuracy(y, p) - balanced_accuracy_score(y, p)) < 1e-12
