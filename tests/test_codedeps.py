"""Each stage's source files are computed from its imports, and dvc.yaml, the code digest and DVC itself agree."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from embalance.codedeps import (
    DEP_PREFIX,
    SRC,
    closure,
    compact,
    rewrite_dvc_yaml,
    stage_deps,
    stage_entries,
    sweep_files,
)

from .conftest import ROOT

STAGES = ("validate", "prepare", "embed", "sweep", "tune", "export", "report")


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.fixture
def tiny_src(tmp_path: Path) -> Path:
    """A tiny ``embalance`` package: relative, lazy, type-only and third-party imports."""
    _write(tmp_path, {
        "embalance/__init__.py": "",
        "embalance/a.py": "import numpy\nfrom . import b\nfrom .pkg.c import f\n",
        "embalance/b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from embalance import typed\n\ndef g():\n    import embalance.lazy\n",
        "embalance/typed.py": "",
        "embalance/lazy.py": "",
        "embalance/pkg/__init__.py": "",
        "embalance/pkg/c.py": "from .. import unrelated_name\n",
        "embalance/pkg/d.py": "",
        "embalance/unused.py": "",
    })  # fmt: skip
    return tmp_path


def test_closure_follows_relative_lazy_and_package_imports_and_skips_type_only_ones(tiny_src: Path) -> None:
    files = [p.relative_to(tiny_src).as_posix() for p in closure(["embalance.a"], tiny_src)]
    assert files == ["embalance/__init__.py", "embalance/a.py", "embalance/b.py", "embalance/lazy.py", "embalance/pkg/__init__.py", "embalance/pkg/c.py"]


def test_compact_lists_a_folder_only_when_all_its_files_are_in(tiny_src: Path) -> None:
    pkg = tiny_src / "embalance" / "pkg"
    assert compact([pkg / "__init__.py", pkg / "c.py"], tiny_src) == ["embalance/pkg/__init__.py", "embalance/pkg/c.py"]
    assert compact([pkg / "__init__.py", pkg / "c.py", pkg / "d.py"], tiny_src) == ["embalance/pkg"]


def test_a_stage_enters_through_its_cli_function_and_the_params_schema() -> None:
    assert stage_entries("sweep") == ["embalance.params", "embalance.stages", "embalance.stages.sweep"]
    assert stage_entries("tune") == ["embalance.params", "embalance.stages", "embalance.stages.tune"]
    assert stage_entries("prepare") == ["embalance.data", "embalance.data.prepare", "embalance.params"]


def test_the_sweep_depends_on_the_seeds_and_the_figures_it_imports() -> None:
    deps = stage_deps("sweep")
    assert deps[0] == f"{DEP_PREFIX}embalance/stages/sweep.py"
    for dep in ("runtime.py", "stages/report", "experiment", "cluster.py", "params.py"):
        assert f"{DEP_PREFIX}embalance/{dep}" in deps, dep
    assert f"{DEP_PREFIX}embalance/cli.py" not in deps and f"{DEP_PREFIX}embalance/server" not in deps
    # The code digest (workers, resume key) hashes the same files.
    assert SRC / "embalance" / "runtime.py" in sweep_files() and SRC / "embalance" / "stages" / "report" / "figures.py" in sweep_files()


def test_dvc_yaml_lists_each_stages_source_files() -> None:
    """Fails when dvc.yaml's source deps are not what the stages import: run `python -m embalance.codedeps --write dvc.yaml`."""
    text = (ROOT / "dvc.yaml").read_text()
    dvc = yaml.safe_load(text)
    assert sorted(dvc["stages"]) == sorted(STAGES)
    for name, stage in dvc["stages"].items():
        listed = [d for d in stage.get("do", stage)["deps"] if d.startswith(DEP_PREFIX)]
        wanted = stage_deps(name)
        missing, extra = sorted(set(wanted) - set(listed)), sorted(set(listed) - set(wanted))
        assert listed == wanted, f"dvc.yaml stage {name!r}: source deps out of date (missing {missing}, not imported {extra}); run `python -m embalance.codedeps --write dvc.yaml`"
    assert rewrite_dvc_yaml(text) == text


def test_rewriting_keeps_other_deps_comments_and_the_rest() -> None:
    text = (ROOT / "dvc.yaml").read_text()
    stale = text.replace(f"        - {DEP_PREFIX}embalance/runtime.py\n", "", 1)  # the first: embed's
    stale = stale.replace(f"      - {DEP_PREFIX}embalance/stages/report\n", f"      - {DEP_PREFIX}embalance/stages/report  # kept\n      - {DEP_PREFIX}embalance/gone.py\n", 1)
    assert stale != text
    fixed = rewrite_dvc_yaml(stale)
    assert fixed == text.replace(f"      - {DEP_PREFIX}embalance/stages/report\n", f"      - {DEP_PREFIX}embalance/stages/report  # kept\n", 1)
    assert "# length batching" in fixed and "- ${data.mirror}/${item}" in fixed and "- data/params.checked" in fixed


@pytest.mark.slow
def test_dvc_status_sees_a_change_in_runtime_as_a_change_of_the_sweep(tmp_path: Path) -> None:
    """In a copy of the project, with the sweep's lock entry committed over stand-in data: editing runtime.py makes
    `dvc status` report the sweep changed, and editing code the sweep does not import leaves it up to date."""
    pytest.importorskip("dvc")
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, files.decode().split("\0")):
        source, target = ROOT / name, tmp_path / name
        if not source.exists() and not source.is_symlink():  # deleted in the worktree, not yet committed
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            target.symlink_to(source.readlink())
        else:
            shutil.copyfile(source, target)
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    _write(tmp_path, {  # the stage's other deps and its outputs, so that `dvc commit` can record them
        "data/prepared/sst2/meta.json": "{}",
        "data/embeddings/sst2/train.npy": "x",
        **{f"results/sst2/{f}": "x" for f in ("cells.csv", "folds.csv", "metrics.json", "balanced_accuracy.png")},
    })  # fmt: skip

    def dvc(*args: str) -> str:
        return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=tmp_path, capture_output=True, text=True, check=True).stdout

    def status() -> dict:
        return json.loads(dvc("status", "--json", "sweep@sst2"))

    dvc("commit", "--force", "sweep@sst2")
    assert status() == {}
    with (tmp_path / "src/embalance/server/app.py").open("a") as f:  # the HTTP server: not the sweep's code
        f.write("\n\ndef _unrelated() -> None:\n    pass\n")
    assert status() == {}
    with (tmp_path / "src/embalance/runtime.py").open("a") as f:
        f.write("\n\ndef _changed() -> None:\n    pass\n")
    assert status() == {"sweep@sst2": [{"changed deps": {"src/embalance/runtime.py": "modified"}}]}
