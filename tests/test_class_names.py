"""Class names for a dataset the project has never seen: `classes.txt` in its mirror folder, or `data.class_names.<new>`
through every override path (`--set`, `dvc exp run -S`, `mlflow run -P set=`)."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from embalance.cli import main as cli_main
from embalance.data import prepare
from embalance.errors import ConfigError

from .conftest import ROOT, write_csv_gz

BIN = Path(sys.executable).parent


@pytest.fixture
def new_mirror(tmp_path: Path, shared_datasets: Path) -> Path:
    """A mirror holding one dataset, `newset`, that no params file names: 30 SST-2 rows per class per split."""
    root = tmp_path / "mirror"
    df = pd.read_csv(shared_datasets / "sst2" / "train.csv.gz").groupby("label").head(30)
    for split in ("train", "test"):
        write_csv_gz(root / "newset" / f"{split}.csv.gz", df)
    return root


def _params(base_params: dict, mirror: Path, tmp_path: Path) -> dict:
    p = copy.deepcopy(base_params)
    p["data"].update(datasets=["newset"], mirror=str(mirror))
    p["tracking"]["uri"] = f"sqlite:///{tmp_path}/mlflow.db"
    assert "newset" not in p["data"]["class_names"]
    return p


def test_classes_txt_names_the_classes(base_params: dict, new_mirror: Path, tmp_path: Path) -> None:
    p = _params(base_params, new_mirror, tmp_path)
    assert prepare.run(p, "newset", out_dir=tmp_path / "a").meta["class_names"] == ["0", "1"]  # no names anywhere: indices
    (new_mirror / "newset" / "classes.txt").write_text("negative\npositive\n\n")
    meta = prepare.run(p, "newset", out_dir=tmp_path / "b").meta
    assert meta["class_names"] == ["negative", "positive"] and meta["class_names_source"].endswith("newset/classes.txt")
    p["data"]["class_names"]["newset"] = ["bad", "good"]  # params win over the file
    prepare.run(p, "newset", out_dir=tmp_path / "c")
    meta = json.loads((tmp_path / "c" / "meta.json").read_text())
    assert meta["class_names"] == ["bad", "good"] and meta["class_names_source"] == "data.class_names.newset"


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("a\nb\nc\n", r"classes.txt has 3 names \(a, b, c\), but the dataset has 2 classes"),
        ("a\n\nb\n", r"classes.txt' must list one non-empty class name per line \(label 0 first\), but line 2 is empty"),
        ("a\na\n", r"classes.txt' lists a class name twice: \['a', 'a'\]"),
    ],
)
def test_a_bad_classes_txt_is_named(base_params: dict, new_mirror: Path, tmp_path: Path, text: str, error: str) -> None:
    (new_mirror / "newset" / "classes.txt").write_text(text)
    with pytest.raises(ConfigError, match=error):
        prepare.run(_params(base_params, new_mirror, tmp_path), "newset", out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing written


def test_cli_set_names_a_new_dataset(base_params: dict, new_mirror: Path, tmp_path: Path) -> None:
    out = tmp_path / "prepared"
    argv = ["prepare", "--dataset", "newset", "--params", str(ROOT / "params.yaml"), "--out", str(out),
            "--set", f"data.mirror={new_mirror}", "--set", "data.class_names.newset=[a, b]", "--set", ""]  # '' as MLproject passes
    assert cli_main(argv) == 0
    assert json.loads((out / "meta.json").read_text())["class_names"] == ["a", "b"]


def _env() -> dict[str, str]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    for var in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_TRACKING_URI"):
        env.pop(var, None)
    return env


@pytest.mark.slow
def test_dvc_exp_run_set_param_names_a_new_dataset(base_params: dict, new_mirror: Path, tmp_path: Path) -> None:
    """DVC's -S takes Hydra's override grammar, where a key new to a map is written with a leading `+`."""
    proj = tmp_path / "proj"
    shutil.copytree(ROOT / "src", proj / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("dvc.yaml", "paths.yaml"):
        shutil.copy(ROOT / name, proj / name)
    (proj / "params.yaml").write_text(yaml.safe_dump(_params(base_params, new_mirror, tmp_path), sort_keys=False))
    for cmd in (["git", "init", "-q"], [str(BIN / "dvc"), "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"]):
        subprocess.run(cmd, cwd=proj, env=_env(), check=True, capture_output=True)
    out = subprocess.run([str(BIN / "dvc"), "exp", "run", "-S", "+data.class_names.newset=[a,b]", "prepare@newset"],
                         cwd=proj, env=_env(), capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert json.loads((proj / "data" / "prepared" / "newset" / "meta.json").read_text())["class_names"] == ["a", "b"]
    assert yaml.safe_load((proj / "params.yaml").read_text())["data"]["class_names"]["newset"] == ["a", "b"]


@pytest.mark.slow
def test_mlflow_run_set_names_a_new_dataset(base_params: dict, new_mirror: Path, tmp_path: Path) -> None:
    proj = tmp_path / "proj"
    proj.mkdir()
    for name in ("MLproject", "conda.yaml"):
        shutil.copy(ROOT / name, proj / name)
    (proj / "params.yaml").write_text(yaml.safe_dump(_params(base_params, new_mirror, tmp_path), sort_keys=False))
    cmd = [str(BIN / "mlflow"), "run", str(proj), "-e", "prepare", "--env-manager", "local", "--experiment-name", "embalance",
           "-P", "dataset=newset", "-P", "set=data.class_names.newset=[a, b]"]
    out = subprocess.run(cmd, cwd=proj, env={**_env(), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"}, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert json.loads((proj / "data" / "prepared" / "newset" / "meta.json").read_text())["class_names"] == ["a", "b"]
