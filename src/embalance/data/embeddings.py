"""Reading a dataset's embeddings (what the embed stage wrote) with its labels, class names and data tags."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from embalance import tracking
from embalance.errors import ConfigError
from embalance.experiment.protocol import Embeddings
from embalance.io import default_dir


def load_embeddings(dataset: str, embeddings_dir: Path | None = None, prepared_dir: Path | None = None, *, with_test: bool = True) -> Embeddings:
    emb_dir = embeddings_dir or default_dir("embeddings", dataset)
    prep_dir = prepared_dir or default_dir("prepared", dataset)
    if not (emb_dir / "train.npy").is_file():
        raise ConfigError(f"No embeddings in {str(emb_dir)!r}; run `embalance embed --dataset {dataset}` (or `dvc repro`) first.")
    meta = json.loads((prep_dir / "meta.json").read_text()) if (prep_dir / "meta.json").is_file() else {}
    y_train = np.load(emb_dir / "train_labels.npy")
    n_classes = int(meta.get("n_classes", int(y_train.max()) + 1))
    return Embeddings(
        X_train=np.load(emb_dir / "train.npy"),
        y_train=y_train,
        X_test=np.load(emb_dir / "test.npy") if with_test else None,
        y_test=np.load(emb_dir / "test_labels.npy") if with_test else None,
        n_classes=n_classes,
        class_names=meta.get("class_names", [str(c) for c in range(n_classes)]),
        tags=tracking.data_tags(emb_dir),
    )
