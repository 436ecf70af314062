"""`embalance.git_dirty`: true when the code or configuration differs from the commit, not when DVC has deleted or
rewritten its own files (a stage's outputs before it runs, dvc.lock), in the project and in a study's folder."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from embalance.tracking import git_info

DVC_YAML = """\
stages:
  sweep:
    foreach: ${data.datasets}
    do:
      cmd: embalance sweep --dataset ${item}
      deps:
        - src/sweep.py
      outs:
        - results/${item}/cells.csv
      metrics:
        - results/${item}/metrics.json:
            cache: false
      plots:
        - results/${item}/curve.png:
            cache: false
  report:
    cmd: embalance report
    outs:
      - reports/README.md:
          cache: false
    plots:
      - reports/figures:
          cache: false
"""

FILES = {
    "dvc.yaml": DVC_YAML,
    "dvc.lock": "schema: '2.0'\n",
    "params.yaml": "seed: 0\n",
    "src/sweep.py": "print('sweep')\n",
    "results/sst2/metrics.json": "{}\n",
    "results/sst2/curve.png": "png\n",
    "reports/README.md": "# results\n",
    "reports/figures/a.png": "png\n",
    "studies/paper/dvc.yaml": DVC_YAML,
    "studies/paper/dvc.lock": "schema: '2.0'\n",
    "studies/paper/params.yaml": "seed: 1\n",
    "studies/paper/results/imdb/metrics.json": "{}\n",
    "studies/paper/results/imdb/.gitignore": "/cells.csv\n",
    "notes/README.md": "about the results/ folder\n",
}


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args], cwd=repo, check=True, capture_output=True)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    if shutil.which("git") is None:
        pytest.fail("git is needed for the provenance tags (and for these tests)")
    for name, text in FILES.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-q", "-m", "project")
    return tmp_path


def _dirty(repo: Path, cwd: Path | None = None) -> str:
    return git_info(cwd or repo)["embalance.git_dirty"]


def test_a_clean_checkout_is_not_dirty_and_the_commit_is_tagged(repo: Path) -> None:
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()
    assert git_info(repo) == {"embalance.git_commit": head, "mlflow.source.git.commit": head, "embalance.git_dirty": "false"}


def test_dvc_deleting_outputs_and_rewriting_dvc_lock_is_not_dirty(repo: Path) -> None:
    # What `dvc repro` does to git-tracked files before and while it runs the stages (cache: false outputs).
    (repo / "results" / "sst2" / "metrics.json").unlink()
    (repo / "results" / "sst2" / "curve.png").write_text("another png\n")
    shutil.rmtree(repo / "reports" / "figures")
    (repo / "reports" / "README.md").unlink()
    (repo / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")
    (repo / "studies" / "paper" / "dvc.lock").unlink()
    (repo / "studies" / "paper" / "results" / "imdb" / "metrics.json").write_text('{"a": 1}\n')
    (repo / "studies" / "paper" / "results" / "imdb" / ".gitignore").write_text("/cells.csv\n/folds.csv\n")
    assert _dirty(repo) == "false"
    assert _dirty(repo, repo / "studies" / "paper") == "false"  # a stage of the study runs in its folder


@pytest.mark.parametrize("changed", ["src/sweep.py", "params.yaml", "dvc.yaml", "studies/paper/params.yaml", "notes/README.md"])
def test_a_change_to_code_or_configuration_is_dirty(repo: Path, changed: str) -> None:
    (repo / "results" / "sst2" / "metrics.json").unlink()  # beside DVC's own changes
    (repo / changed).write_text((repo / changed).read_text() + "# changed\n")
    assert _dirty(repo) == "true"


def test_a_staged_change_is_dirty_and_an_untracked_file_is_not(repo: Path) -> None:
    (repo / "scratch.py").write_text("x = 1\n")
    assert _dirty(repo) == "false"
    (repo / "src" / "sweep.py").write_text("print('changed')\n")
    _git(repo, "add", "src/sweep.py")
    assert _dirty(repo) == "true"


def test_outside_a_git_repository_there_are_no_tags(tmp_path: Path) -> None:
    assert git_info(tmp_path) == {}
