"""The batched engine gives the sequential engine's fold metrics, through the whole sweep (issue 4's equivalence)."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from embalance.data.embeddings import load_embeddings
from embalance.stages.sweep import run_sweep


def test_batched_and_sequential_sweeps_agree(tiny_data: Path, tiny_params: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tiny_data.parent)
    emb = load_embeddings("tiny")
    tables = {}
    for engine in ("sequential", "batched"):
        p = copy.deepcopy(tiny_params)
        p["cv"]["n_folds"] = 4
        p["augment"]["methods"] = ["none", "smote", "vae", "undersample", "weighted", "logit_adjusted", "smote+mixup+refit"]
        p["train"].update(engine=engine, max_epochs=8, patience=2, max_models_per_group=12)  # groups span cells
        _, folds = run_sweep(emb, p, "tiny", progress=False)
        tables[engine] = folds.sort_values(["method", "minority_size", "fold"]).reset_index(drop=True)
    seq, bat = tables["sequential"], tables["batched"]
    assert len(seq) == 7 * 2 * 4
    pd.testing.assert_frame_equal(seq[["method", "minority_size", "fold", "status"]], bat[["method", "minority_size", "fold", "status"]])
    assert (seq["status"] == "ok").sum() > 40  # most folds ran (SMOTE at n=8 with on_small_class=raise does not)
    for col in ("best_epoch", "stop_epoch", "epochs_run", "n_real_1", "n_synthetic_1"):
        np.testing.assert_array_equal(seq[col].to_numpy(), bat[col].to_numpy(), err_msg=col)
    cols = ("test_balanced_accuracy", "test_macro_f1", "es_test_balanced_accuracy", "fixed_test_balanced_accuracy", "best_val_loss", "val_balanced_accuracy")
    for col in cols:
        np.testing.assert_allclose(seq[col].to_numpy(), bat[col].to_numpy(), atol=1e-5, equal_nan=True, err_msg=col)
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
