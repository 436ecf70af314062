from __future__ import annotations

import gzip
import os
from pathlib import Path

import pandas as pd
import pytest
import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing in the tests may download
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
SHARED = (ROOT / ".." / "shared" / "datasets").resolve()


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    if not (SHARED / "sst2" / "train.csv.gz").is_file():
        pytest.fail(f"The dataset mirror is expected at {SHARED} (../shared/datasets beside the checkout).")
    return SHARED


@pytest.fixture(scope="session")
def base_params() -> dict:
    with (ROOT / "params.yaml").open() as f:
        return yaml.safe_load(f)


def write_csv_gz(path: Path, df: pd.DataFrame) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8", newline="") as f:
        df.to_csv(f, index=False)


@pytest.fixture(scope="session")
def tiny_mirror(tmp_path_factory: pytest.TempPathFactory, shared_datasets: Path) -> Path:
    """A mirror with a real slice of SST-2: 120 training rows per class, 40 test rows per class."""
    root = tmp_path_factory.mktemp("mirror")
    for split, n in (("train", 120), ("test", 40)):
        df = pd.read_csv(shared_datasets / "sst2" / f"{split}.csv.gz")
        df = pd.concat([df[df.label == c].head(n) for c in (0, 1)])
        write_csv_gz(root / "tiny" / f"{split}.csv.gz", df)
    return root


@pytest.fixture
def tiny_params(base_params: dict, tiny_mirror: Path, tmp_path: Path) -> dict:
    """The project's params, shrunk to a tiny dataset: 2 folds, 2 sizes, a few epochs, its own MLflow store."""
    import copy

    p = copy.deepcopy(base_params)
    p["data"].update(datasets=["tiny"], mirror=str(tiny_mirror), max_train_per_class=None, class_names={"tiny": ["negative", "positive"]})
    p["imbalance"].update(sizes=[8, 32])
    p["cv"]["n_folds"] = 2
    p["train"].update(max_epochs=4, patience=2)
    p["augment"]["on_small_class"] = "raise"  # so that SMOTE at n=8 (4 per training part <= k=5) is a recorded failure
    p["augment"]["vae"].update(epochs=10)
    p["tracking"]["uri"] = f"sqlite:///{tmp_path}/mlflow.db"
    return p


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory, tiny_mirror: Path, base_params: dict) -> Path:
    """data/prepared/tiny and data/embeddings/tiny, built once for the whole session."""
    root = tmp_path_factory.mktemp("tiny_project")
    import copy

    from embalance import embed, prepare

    p = copy.deepcopy(base_params)
    p["data"].update(mirror=str(tiny_mirror), max_train_per_class=None)
    prepare.run(p, "tiny", out_dir=root / "data" / "prepared" / "tiny")
    embed.run(p, "tiny", prepared_dir=root / "data" / "prepared" / "tiny", out_dir=root / "data" / "embeddings" / "tiny")
    return root / "data"
