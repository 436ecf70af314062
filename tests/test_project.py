"""The project files agree with each other: pyproject vs conda.yaml, MLproject vs the CLI, dvc.yaml vs params.yaml."""

from __future__ import annotations

import re
import tomllib

import yaml

from embalance.cli import build_parser
from embalance.params import load_params, validate

from .conftest import ROOT


def test_conda_env_matches_pyproject() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    env = yaml.safe_load((ROOT / "conda.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert sorted(p for p in pip if p != "-e .") == sorted(deps)
    assert "-e ." in pip  # installs the `embalance` command itself
    py = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python"))
    req = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert py.split("=")[1] >= req.removeprefix(">=")


def test_constraints_pin_torch_and_every_dependency() -> None:
    pins = dict(line.split("==") for line in (ROOT / "constraints.txt").read_text().splitlines() if "==" in line)
    pins = {k.lower().replace("_", "-"): v for k, v in pins.items()}
    assert pins["torch"] == "2.13.0"
    for dep in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]:
        name = re.split(r"[<>=!~\[ ]", dep)[0].lower().replace("_", "-")
        assert name in pins, f"{name} is not pinned in constraints.txt"


def test_every_mlproject_parameter_is_passed_and_accepted() -> None:
    project = yaml.safe_load((ROOT / "MLproject").read_text())
    parser = build_parser()
    for name, ep in project["entry_points"].items():
        command = ep["command"]
        for param in ep.get("parameters", {}):
            assert "{" + param + "}" in command, f"entry point {name!r} declares {param!r} but never passes it"
        filled = command.format(**{p: "x" for p in ep.get("parameters", {})}).split()
        assert filled[0] == "embalance", f"entry point {name!r} must call the same CLI as dvc.yaml"
        sub = filled[1]
        from embalance.cli import STAGES

        assert sub in STAGES
        # The CLI knows every flag the entry point passes.
        flags = [f for f in filled if f.startswith("--")]
        known = {a for act in parser._subparsers._group_actions[0].choices[sub]._actions for a in act.option_strings}
        assert set(flags) <= known, (name, set(flags) - known)


def test_dvc_stages_call_the_cli_and_name_real_params(base_params: dict) -> None:
    validate(base_params)
    src = yaml.safe_load((ROOT / "paths.yaml").read_text())["paths"]["src"]
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text().replace("${paths.src}", src))
    for name, stage in dvc["stages"].items():
        body = stage.get("do", stage)  # foreach stages (one per dataset) and plain ones (report)
        assert body["cmd"].startswith(f"embalance {name} "), name
        # Each stage names its own module (or package) among its deps, and every source dep exists.
        sources = [d for d in body["deps"] if d.startswith("src/")]
        assert any(d.rstrip("/").endswith((f"/{name}.py", f"/{name}")) for d in sources), (name, sources)
        for dep in sources:
            assert (ROOT / dep).exists(), f"dvc.yaml stage {name!r} depends on {dep!r}, which does not exist"
        for key in body["params"]:
            if isinstance(key, dict):  # the whole file (the validate stage)
                assert key == {"params.yaml": None}, (name, key)
                continue
            node = base_params
            for part in key.split("."):
                assert part in node, f"dvc.yaml stage {name!r} names param {key!r}, which params.yaml lacks"
                node = node[part]


def test_the_paper_study_runs_the_projects_pipeline_with_its_own_params() -> None:
    """studies/paper: dvc.yaml is the project's (a link), its paths.yaml points at the same code, and its params.yaml
    is a complete, valid configuration that differs from the default only where the study says so."""
    study = ROOT / "studies" / "paper"
    assert (study / "dvc.yaml").is_symlink() and (study / "dvc.yaml").resolve() == (ROOT / "dvc.yaml").resolve()
    src = yaml.safe_load((study / "paths.yaml").read_text())["paths"]["src"]
    assert (study / src / "embalance").resolve() == (ROOT / "src" / "embalance").resolve()
    params = load_params(study / "params.yaml")
    default = load_params(ROOT / "params.yaml")
    assert params["data"]["datasets"] == ["sst2", "imdb", "ag_news"] and params["imbalance"]["draws"] >= 5
    assert (study / params["data"]["mirror"]).resolve() == (ROOT / default["data"]["mirror"]).resolve()
    differs = sorted(k for k in default if params[k] != default[k])
    assert differs == ["data", "export", "imbalance", "tune"], differs
    # A DVC repository of its own, so that the project's `dvc status`, `dvc exp run` and `dvc plots` see only the default
    # pipeline (the study's cached outputs are in no cache a fresh clone has); its plot templates are the project's.
    assert (study / ".dvc" / "config").is_file() and (study / ".dvcignore").is_file()
    assert (study / ".dvc" / "plots").resolve() == (ROOT / ".dvc" / "plots").resolve()
