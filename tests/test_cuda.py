"""The CUDA paths against the CPU: device choice, the VAE oversampler and both training engines.

Skipped without a CUDA device; ``benchmarks/gpu_check.py`` runs them (``pytest -m cuda``) on a GPU machine. Across
devices the bits differ (another summation order; the oversamplers draw another random stream on CUDA), so what is
compared is what must not change; the reasons for each tolerance are in docs/performance.md#gpu-proof.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import numpy as np
import pytest
import torch

from embalance.experiment.oversample import SMOTE, VAEOverSampler
from embalance.experiment.train import fit_mlp
from embalance.experiment.train.batched import fit_mlp_batched
from embalance.runtime import resolve_device
from tests.test_batched import CONFIG, N_CLASSES, SEEDS, make_folds
from tests.test_oversample import three_classes

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

CUDA = replace(CONFIG, device="cuda")


def fits(engine: str, config: object) -> list:
    folds = make_folds()
    if engine == "sequential":
        return [
            fit_mlp(*f, n_classes=N_CLASSES, config=config, seed=s) for f, s in zip(folds, SEEDS, strict=True)
        ]
    return fit_mlp_batched(folds, n_classes=N_CLASSES, config=config, seeds=SEEDS)


def assert_trained_alike(a: list, b: list) -> None:
    """First-epoch validation losses within 1e-4 (relative), the same epochs in at least 5 of the 6 folds."""
    first_a = np.array([r.history["val_loss"][0] for r in a])
    first_b = np.array([r.history["val_loss"][0] for r in b])
    np.testing.assert_allclose(first_b, first_a, rtol=1e-4)
    same = [(r.best_epoch, r.epochs_run) == (s.best_epoch, s.epochs_run) for r, s in zip(a, b, strict=True)]
    assert sum(same) >= 5, [
        (r.best_epoch, r.epochs_run, s.best_epoch, s.epochs_run) for r, s in zip(a, b, strict=True)
    ]


def test_auto_picks_cuda() -> None:
    X, y = three_classes()
    sampler = SMOTE(random_state=0)
    sampler.fit_resample(X, y)
    assert resolve_device("auto") == "cuda" and sampler.device_ == "cuda"


def test_vae_on_cuda_counts_match_cpu() -> None:
    X, y = three_classes()
    X = X.astype(np.float32)
    _, y_cpu = VAEOverSampler(epochs=5, device="cpu", random_state=0).fit_resample(X, y)
    sampler = VAEOverSampler(epochs=5, device="cuda", random_state=0)
    X_gpu, y_gpu = sampler.fit_resample(X, y)
    assert Counter(y_gpu.tolist()) == Counter(y_cpu.tolist())
    assert X_gpu.dtype == np.float32 and np.isfinite(X_gpu).all()
    np.testing.assert_array_equal(X_gpu[: len(X)], X)  # the originals are copied, not computed
    assert all(next(m.parameters()).device.type == "cuda" for m in sampler.models_.values())
    assert all(np.isfinite(v) for v in sampler.train_loss_.values())


@pytest.mark.parametrize("engine", ["sequential", "batched"])
def test_engine_on_cuda_trains_like_cpu(engine: str) -> None:
    cpu, gpu = fits(engine, CONFIG), fits(engine, CUDA)
    assert all(next(r.model.parameters()).device.type == "cuda" for r in gpu)
    assert_trained_alike(cpu, gpu)


def test_batched_trains_like_sequential_on_cuda() -> None:
    assert_trained_alike(fits("sequential", CUDA), fits("batched", CUDA))
