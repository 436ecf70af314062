from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from embalance.data.prepare import balance, cap_per_class, prepare, read_mirror_csv
from embalance.errors import ConfigError
from embalance.io import ensure_writable_dir

from .conftest import write_csv_gz


def _write_raw(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write(text)
    return path


def test_real_mirror_counts(shared_datasets: Path) -> None:
    prep = prepare("sst2", mirror=shared_datasets, hub=None, class_names=["negative", "positive"], max_train_per_class=300, max_test_per_class=None, seed=0)
    assert prep.meta["rows_in_source"] == {"train": 67349, "test": 1821}
    assert prep.meta["train_counts"] == {0: 300, 1: 300}
    assert prep.meta["test_counts"] == {0: 909, 1: 909}  # balanced: the smaller class's 909 each
    assert list(prep.train.columns) == ["text", "label"] and prep.train["label"].dtype == np.int64


def test_cap_and_balance_are_exact_and_seeded() -> None:
    df = pd.DataFrame({"text": [f"t{i}" for i in range(100)], "label": [0] * 70 + [1] * 20 + [2] * 10})
    capped = cap_per_class(df, 15, seed=1)
    assert capped["label"].value_counts().to_dict() == {0: 15, 1: 15, 2: 10}
    assert capped.equals(cap_per_class(df, 15, seed=1))
    assert not capped.equals(cap_per_class(df, 15, seed=2))
    assert balance(df, None, seed=0)["label"].value_counts().to_dict() == {0: 10, 1: 10, 2: 10}
    assert balance(df, 4, seed=0)["label"].value_counts().to_dict() == {0: 4, 1: 4, 2: 4}


def test_malformed_csv_names_file_and_line(tmp_path: Path) -> None:
    path = _write_raw(tmp_path / "bad" / "train.csv.gz", 'text,label\nfine,0\n"too",1,many\n')
    with pytest.raises(ConfigError, match=r"Malformed CSV '.*bad/train.csv.gz'.*line 3"):
        read_mirror_csv(path)


def test_bad_label_names_row(tmp_path: Path) -> None:
    path = _write_raw(tmp_path / "x" / "train.csv.gz", "text,label\ngood,0\nalso good,1\nbad,positive\n")
    with pytest.raises(ConfigError, match=r"row 3 \(line 4\): label 'positive' is not a class index"):
        read_mirror_csv(path)


def test_wrong_header_and_empty_text(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"must have the header `text,label`, but has columns \['sentence', 'label'\]"):
        read_mirror_csv(_write_raw(tmp_path / "a.csv.gz", "sentence,label\nhi,0\n"))
    with pytest.raises(ConfigError, match=r"row 2 \(line 3\): the text is empty"):
        read_mirror_csv(_write_raw(tmp_path / "b.csv.gz", 'text,label\nhi,0\n"  ",1\n'))


def test_unknown_dataset_says_where_it_looked(tmp_path: Path, shared_datasets: Path) -> None:
    with pytest.raises(ConfigError) as e:
        prepare("nosuch", mirror=shared_datasets, hub={"imdb": {"path": "x"}}, class_names=None, max_train_per_class=None, max_test_per_class=None, seed=0)
    msg = str(e.value)
    assert "nosuch/train.csv.gz" in msg and "data.hub.nosuch" in msg
    assert "Known datasets: ag_news, imdb, sst2" in msg


def test_hub_fallback_offline_gives_actionable_error(tmp_path: Path) -> None:
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    with pytest.raises(ConfigError, match=r"not in the mirror .*loading it from the Hugging Face Hub as 'nobody/nothing' failed"):
        prepare("ghost", mirror=tmp_path, hub={"ghost": {"path": "nobody/nothing", "train": "train", "test": "test"}}, class_names=None, max_train_per_class=None, max_test_per_class=None, seed=0)


def test_new_dataset_in_mirror_format_needs_no_code(tmp_path: Path) -> None:
    for split in ("train", "test"):
        write_csv_gz(tmp_path / "mine" / f"{split}.csv.gz", pd.DataFrame({"text": [f"row {i}" for i in range(30)], "label": [0, 1, 2] * 10}))
    prep = prepare("mine", mirror=tmp_path, hub=None, class_names=None, max_train_per_class=None, max_test_per_class=None, seed=0)
    assert prep.meta["n_classes"] == 3 and prep.meta["class_names"] == ["0", "1", "2"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere; the permission check cannot fail as root")
def test_unwritable_output_folder(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    with pytest.raises(ConfigError, match=r"Output folder '.*ro/out' is not writable"):
        ensure_writable_dir(ro / "out")


def test_output_path_that_is_a_file(tmp_path: Path) -> None:
    blocker = tmp_path / "results"
    blocker.write_text("not a folder")
    with pytest.raises(ConfigError, match=r"Output folder '.*results/sst2' is not writable"):
        ensure_writable_dir(blocker / "sst2")
