"""Stage `prepare`: read a dataset's train and test splits and write them as Parquet.

Sources, in order: the mirror folder (``<mirror>/<name>/<split>.csv.gz`` with columns ``text,label``), then the
Hugging Face Hub (``data.hub.<name>`` in params.yaml). The training split is optionally capped per class
(``data.max_train_per_class``); the test split is subsampled to equal class counts (the balanced test set).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from embalance.errors import ConfigError
from embalance.io import default_dir, ensure_writable_dir, write_json

SPLITS = ("train", "test")
CLASSES_FILE = "classes.txt"  # optional, in a dataset's mirror folder: one class name per line, label 0 first


@dataclass(frozen=True)
class Prepared:
    train: pd.DataFrame
    test: pd.DataFrame
    meta: dict[str, Any]


def mirror_path(mirror: str | Path, name: str, split: str) -> Path:
    return Path(mirror) / name / f"{split}.csv.gz"


def read_mirror_csv(path: Path) -> pd.DataFrame:
    """Read one mirror CSV and check it: columns text,label; integer labels >= 0; no missing text."""
    try:
        df = pd.read_csv(path, dtype={"text": "string", "label": "string"}, keep_default_na=False, na_filter=False)
    except pd.errors.ParserError as e:
        raise ConfigError(f"Malformed CSV {str(path)!r}: {e}. Each row must have exactly the two columns text,label.") from e
    except (UnicodeDecodeError, EOFError, OSError) as e:
        raise ConfigError(f"Cannot read {str(path)!r} as gzip-compressed UTF-8 CSV: {e}.") from e
    if list(df.columns) != ["text", "label"]:
        raise ConfigError(f"{str(path)!r} must have the header `text,label`, but has columns {list(df.columns)!r}.")
    if len(df) == 0:
        raise ConfigError(f"{str(path)!r} has a header but no rows.")
    labels = pd.to_numeric(df["label"], errors="coerce")
    bad = labels.isna() | (labels < 0) | (labels != labels.round())
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        # +2: one for the header line, one because rows are numbered from 1 in an editor.
        raise ConfigError(
            f"{str(path)!r} row {i + 1} (line {i + 2}): label {df['label'].iloc[i]!r} is not a class index; "
            "labels must be integers 0, 1, 2, ..."
        )
    empty = df["text"].str.strip() == ""
    if empty.any():
        i = int(np.flatnonzero(empty.to_numpy())[0])
        raise ConfigError(f"{str(path)!r} row {i + 1} (line {i + 2}): the text is empty.")
    return pd.DataFrame({"text": df["text"].astype(str).to_numpy(dtype=object), "label": labels.astype("int64").to_numpy()})


def read_hub_split(name: str, spec: Mapping[str, Any], split: str) -> pd.DataFrame:
    """Load one split from the Hugging Face Hub with `datasets` (needs network or a warm HF cache)."""
    import datasets

    text_col, label_col = spec.get("text", "text"), spec.get("label", "label")
    ds = datasets.load_dataset(spec["path"], spec.get("name"), split=spec[split])
    df = ds.to_pandas()
    return pd.DataFrame({"text": df[text_col].astype(str).to_numpy(dtype=object), "label": df[label_col].astype("int64").to_numpy()})


def load_splits(name: str, mirror: str | Path, hub: Mapping[str, Any] | None) -> tuple[dict[str, pd.DataFrame], str]:
    """Both splits of a dataset and a description of where they came from."""
    paths = {s: mirror_path(mirror, name, s) for s in SPLITS}
    if all(p.is_file() for p in paths.values()):
        return {s: read_mirror_csv(p) for s, p in paths.items()}, f"mirror:{Path(mirror) / name}"
    present = [str(p) for p in paths.values() if p.is_file()]
    if present:
        missing = [str(p) for p in paths.values() if not p.is_file()]
        raise ConfigError(f"Dataset {name!r} is only partly in the mirror: found {present}, missing {missing}.")
    spec = (hub or {}).get(name)
    if spec is None:
        known = sorted(set(_mirror_names(mirror)) | set(hub or {}))
        raise ConfigError(
            f"Dataset {name!r} was not found. Looked for {paths['train']} and {paths['test']} (data.mirror={str(mirror)!r}) "
            f"and for a Hugging Face Hub entry `data.hub.{name}` in params.yaml (none). Known datasets: {', '.join(known) or '(none)'}. "
            f"To fix: put {name}/train.csv.gz and {name}/test.csv.gz (columns text,label) in the mirror folder, "
            f"or add `data.hub.{name}: {{path: <hub id>, train: <split>, test: <split>}}`."
        )
    try:
        return {s: read_hub_split(name, spec, s) for s in SPLITS}, f"hub:{spec['path']}"
    except Exception as e:  # the hub client raises many types (offline, 404, auth); all mean "not to be had"
        raise ConfigError(
            f"Dataset {name!r} is not in the mirror ({Path(mirror) / name} has no train/test .csv.gz) and loading it from the "
            f"Hugging Face Hub as {spec['path']!r} failed: {type(e).__name__}: {e}. To fix: download it once with network access "
            f"(it is then cached), or put {name}/train.csv.gz and {name}/test.csv.gz (columns text,label) in the mirror."
        ) from e


def class_names_for(name: str, mirror: str | Path, given: Sequence[str] | None) -> tuple[list[str] | None, str]:
    """The class names of a dataset and where they came from: ``data.class_names.<name>``, else ``classes.txt``."""
    if given is not None:
        return list(given), f"data.class_names.{name}"
    path = Path(mirror) / name / CLASSES_FILE
    if not path.is_file():
        return None, "class indices (no data.class_names entry, no classes.txt)"
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"Cannot read {str(path)!r} as UTF-8 text (one class name per line): {e}.") from e
    while lines and not lines[-1].strip():
        lines.pop()
    names = [line.strip() for line in lines]
    if not names or not all(names):
        raise ConfigError(f"{str(path)!r} must list one non-empty class name per line (label 0 first), but line {names.index('') + 1 if '' in names else 1} is empty.")
    if len(set(names)) != len(names):
        raise ConfigError(f"{str(path)!r} lists a class name twice: {names!r}.")
    return names, str(path)


def _mirror_names(mirror: str | Path) -> list[str]:
    root = Path(mirror)
    return [p.name for p in root.iterdir() if (p / "train.csv.gz").is_file()] if root.is_dir() else []


def cap_per_class(df: pd.DataFrame, cap: int | None, seed: int) -> pd.DataFrame:
    """Keep at most ``cap`` rows per class (seeded, original order kept)."""
    if cap is None:
        return df.reset_index(drop=True)
    rng = np.random.default_rng(seed)
    keep: list[np.ndarray] = []
    for c in np.unique(df["label"].to_numpy()):
        idx = np.flatnonzero(df["label"].to_numpy() == c)
        keep.append(idx if len(idx) <= cap else rng.choice(idx, size=cap, replace=False))
    return df.iloc[np.sort(np.concatenate(keep))].reset_index(drop=True)


def balance(df: pd.DataFrame, cap: int | None, seed: int) -> pd.DataFrame:
    """Subsample to equal class counts: the smallest class's count, or ``cap`` if smaller."""
    counts = df["label"].value_counts()
    n = int(counts.min()) if cap is None else min(int(counts.min()), cap)
    return cap_per_class(df, n, seed)


def prepare(
    name: str,
    *,
    mirror: str | Path,
    hub: Mapping[str, Any] | None,
    class_names: Sequence[str] | None,
    max_train_per_class: int | None,
    max_test_per_class: int | None,
    seed: int,
) -> Prepared:
    splits, source = load_splits(name, mirror, hub)
    train_labels = np.unique(splits["train"]["label"])
    n_classes = int(train_labels.max()) + 1
    if not np.array_equal(train_labels, np.arange(n_classes)):
        raise ConfigError(f"Dataset {name!r}: training labels must be 0..C-1 with every class present, but found {train_labels.tolist()}.")
    extra = sorted(set(np.unique(splits["test"]["label"]).tolist()) - set(train_labels.tolist()))
    if extra:
        raise ConfigError(f"Dataset {name!r}: the test split has labels {extra} that the training split lacks.")
    class_names, names_source = class_names_for(name, mirror, class_names)
    if class_names is not None and len(class_names) != n_classes:
        raise ConfigError(f"{names_source} has {len(class_names)} names ({', '.join(class_names)}), but the dataset has {n_classes} classes.")
    train = cap_per_class(splits["train"], max_train_per_class, seed)
    test = balance(splits["test"], max_test_per_class, seed + 1)
    meta = {
        "dataset": name,
        "source": source,
        "n_classes": n_classes,
        "class_names": list(class_names) if class_names is not None else [str(c) for c in range(n_classes)],
        "class_names_source": names_source,
        "rows_in_source": {s: len(df) for s, df in splits.items()},
        "train_counts": {int(k): int(v) for k, v in sorted(train["label"].value_counts().items())},
        "test_counts": {int(k): int(v) for k, v in sorted(test["label"].value_counts().items())},
        "max_train_per_class": max_train_per_class,
        "max_test_per_class": max_test_per_class,
        "seed": seed,
    }
    return Prepared(train=train, test=test, meta=meta)


def write_prepared(prep: Prepared, out_dir: Path) -> None:
    ensure_writable_dir(out_dir)
    for split, df in (("train", prep.train), ("test", prep.test)):
        df.to_parquet(out_dir / f"{split}.parquet", index=False)
    write_json(out_dir / "meta.json", prep.meta)


def run(params: Mapping[str, Any], dataset: str, out_dir: Path | None = None) -> Prepared:
    data = params["data"]
    prep = prepare(
        dataset,
        mirror=data["mirror"],
        hub=data.get("hub"),
        class_names=(data.get("class_names") or {}).get(dataset),
        max_train_per_class=data.get("max_train_per_class"),
        max_test_per_class=data.get("max_test_per_class"),
        seed=params["seed"],
    )
    out = out_dir or default_dir("prepared", dataset)
    write_prepared(prep, out)
    counts = ", ".join(f"{k}: {v}" for k, v in prep.meta["train_counts"].items())
    print(f"prepare {dataset}: {len(prep.train)} train rows ({counts}), {len(prep.test)} balanced test rows -> {out}")
    return prep
