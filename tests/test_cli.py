"""The `embalance` command line: help for everything, and every configuration error in one line with status 2,
before any work and without leaving an output folder behind."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from embalance.cli import STAGES, build_parser
from embalance.cli import main as cli_main
from embalance.io import ensure_writable_dir, removed_if_left_empty
from embalance.params import TuneParams

from .conftest import ROOT


@pytest.fixture
def project(tiny_params: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project folder with the tiny params (its mirror holds the dataset `tiny`) and nothing built yet."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params, sort_keys=False))
    (tmp_path / "broken.yaml").write_text("seed: [1,\n")
    (tmp_path / "binary.yaml").write_bytes(b"\xff\xfe\x00seed")
    (tmp_path / "folder.yaml").mkdir()
    return tmp_path


def _one_error(capsys: pytest.CaptureFixture[str], command: str) -> str:
    err = capsys.readouterr().err
    assert err.endswith("\n") and err.count("\n") == 1, err  # one line
    assert err.startswith(f"embalance {command}: error: "), err
    return err


# -------------------------------------------------------------------------------------------------- help
def _subparsers() -> dict[str, argparse.ArgumentParser]:
    (action,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def test_every_command_and_option_is_described() -> None:
    subs = _subparsers()
    assert set(subs) == set(STAGES)
    for name, parser in subs.items():
        assert parser.description and len(parser.description) > 40, name
        for action in parser._actions:
            assert action.help, (name, action.option_strings)


def test_closed_sets_are_choices_and_version_is_printed(capsys: pytest.CaptureFixture[str]) -> None:
    subs = _subparsers()
    sampler = next(a for a in subs["tune"]._actions if "--sampler" in a.option_strings)
    assert tuple(sampler.choices) == TuneParams.model_fields["sampler"].annotation.__args__ == ("tpe", "random", "grid")
    fmt = next(a for a in subs["predict"]._actions if "--format" in a.option_strings)
    assert tuple(fmt.choices) == ("auto", "csv", "lines")
    with pytest.raises(SystemExit) as done:
        cli_main(["--version"])
    assert done.value.code == 0
    from embalance import __version__

    assert capsys.readouterr().out == f"embalance {__version__}\n"


# ------------------------------------------------------------------------------------------- bad input
KNOWN = "Known datasets: ag_news, imdb, sst2, tiny."  # the tiny mirror and the keys of data.hub
BAD = [
    # (argv, words the one line must hold)
    (["sweep", "--dataset", "tiny", "--set", "augment.methods=[none,"], ["'[none,'", "not valid YAML"]),
    (["sweep", "--dataset", "tiny", "--set", "augment.method=[none]"], ["`augment.method`", "did you mean `augment.methods`"]),
    (["sweep", "--dataset", "tiny", "--set", "cv.n_folds=1"], ["`cv.n_folds`", ">= 2", "got 1"]),
    (["sweep", "--dataset", "tiny", "--set", "cv..n_folds=5"], ["'cv..n_folds'", "section.key=value"]),
    (["sweep", "--dataset", "tiny", "--set", "n_folds"], ["'n_folds'", "section.key=value"]),
    (["sweep", "--dataset", "tiny", "--params", "nosuch.yaml"], ["'nosuch.yaml'", "does not exist"]),
    (["sweep", "--dataset", "tiny", "--params", "folder.yaml"], ["'folder.yaml'", "is a folder"]),
    (["sweep", "--dataset", "tiny", "--params", "broken.yaml"], ["'broken.yaml'", "not valid YAML", "line 2"]),
    (["sweep", "--dataset", "tiny", "--params", "binary.yaml"], ["'binary.yaml'", "not UTF-8"]),
    (["sweep", "--dataset", "nosuch"], ["'nosuch'", "no embeddings in 'data/embeddings/nosuch'", KNOWN]),
    (["sweep", "--dataset", "../tiny"], ["'../tiny'", "plain folder name"]),
    (["tune", "--dataset", "nosuch"], ["'nosuch'", KNOWN]),
    (["export", "--dataset", "nosuch"], ["'nosuch'", KNOWN]),
    (["embed", "--dataset", "nosuch"], ["'nosuch'", "no prepared in 'data/prepared/nosuch'", KNOWN]),
    (["cell", "--dataset", "nosuch", "--method", "none", "--size", "8"], ["'nosuch'", KNOWN]),
    (["cell", "--dataset", "tiny", "--method", "smoteish", "--size", "8"], ["'smoteish'"]),
    (["cell", "--dataset", "tiny", "--method", "none", "--size", "6"], ["power of two", "6"]),
    (["prepare", "--dataset", "nosuch"], ["Dataset 'nosuch' was not found", KNOWN]),
    (["report", "--datasets", "tiny,nosuch"], ["'nosuch'", "no results in 'results/nosuch'"]),
    (["pipeline", "--datasets", "nosuch"], ["'nosuch'", KNOWN]),
    (["pipeline", "--methods", "none,smoteish"], ["'smoteish'"]),
    (["predict", "--model", "nosuch"], ["'nosuch'", "not a folder"]),
    (["predict", "--model", "nosuch", "--batch-size", "0"], ["`batch_size` must be >= 1", "got 0"]),
]


@pytest.mark.parametrize(("argv", "words"), BAD, ids=[" ".join(a) for a, _ in BAD])
def test_a_config_error_is_one_line_and_status_2_and_writes_nothing(
    project: Path, capsys: pytest.CaptureFixture[str], argv: list[str], words: list[str]
) -> None:
    before = sorted(p.name for p in project.iterdir())
    assert cli_main(argv) == 2
    err = _one_error(capsys, argv[0])
    for word in words:
        assert word in err, (word, err)
    assert sorted(p.name for p in project.iterdir()) == before  # no results/, data/, models/, mlflow.db


@pytest.mark.parametrize(
    "argv",
    [["tune", "--dataset", "tiny", "--sampler", "bogus"], ["tune", "--dataset", "tiny", "--n-trials", "x"], ["nosuch"], ["predict", "--format", "xml", "--model", "m"]],
)
def test_a_usage_error_is_one_line_and_status_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        cli_main(argv)
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and " error: " in err and "--help" in err, err
    assert argv[-1] in err  # the bad value is named


def test_an_unknown_dataset_fails_before_the_heavy_imports(project: Path) -> None:
    """`embalance sweep --dataset nosuch`: the error comes before torch, MLflow or the stage are imported."""
    code = (
        "import sys; from embalance.cli import main; rc = main(['sweep', '--dataset', 'nosuch']); "
        "print(sorted(m for m in ('torch', 'mlflow', 'pandas', 'embalance.stages.sweep') if m in sys.modules)); sys.exit(rc)"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run([sys.executable, "-c", code], cwd=project, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout.strip() == "[]", (done.stdout, done.stderr)
    assert done.stderr.startswith("embalance sweep: error: Dataset 'nosuch' was not found") and done.stderr.count("\n") == 1
    assert not (project / "results").exists()


def test_a_stage_that_fails_after_creating_its_folder_leaves_none(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A known dataset with no embeddings yet: sweep makes its output folder first, then fails; the folder goes."""
    assert cli_main(["sweep", "--dataset", "tiny", "--embeddings", "data/embeddings/tiny", "--out", "out/results/tiny"]) == 2
    assert "No embeddings in 'data/embeddings/tiny'" in _one_error(capsys, "sweep")
    assert not (project / "out").exists() and not (project / "data").exists()


# ------------------------------------------------------------------------------------- output folders
def test_removed_if_left_empty_keeps_what_existed_or_holds_a_file(tmp_path: Path) -> None:
    (tmp_path / "old").mkdir()
    with pytest.raises(RuntimeError), removed_if_left_empty():
        ensure_writable_dir(tmp_path / "old" / "new" / "deeper")
        ensure_writable_dir(tmp_path / "kept")
        (tmp_path / "kept" / "cells.csv").write_text("x\n")
        ensure_writable_dir(tmp_path / "empty" / "sub")
        raise RuntimeError("the stage failed")
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == ["kept", "kept/cells.csv", "old"]
    with removed_if_left_empty():  # success: nothing is removed
        ensure_writable_dir(tmp_path / "done")
    assert (tmp_path / "done").is_dir()
