"""The ways in of a fresh clone, as a new user meets them: no DVC cache, no venv on PATH, the study's outputs absent.

One module-scoped fresh clone (the project's tracked files in a new git repository, with ``../shared/datasets``
beside it) runs ``mlflow run . -P …`` once, on a small slice of SST-2; the tests then check what the user sees next:
the DVC experiment, ``dvc status``, ``dvc metrics show``, ``dvc plots show`` drawn by a browser with no network, and
a typo in params.yaml that must cost nothing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .conftest import ROOT, SHARED
from .webdriver import Browser

pytestmark = pytest.mark.slow  # end to end: `make test` runs them, `make test-fast` skips them

BIN = Path(sys.executable).parent
# The README's command with its overrides, plus caps that make it small (the caps change no code path).
SMALL = "data.max_train_per_class=150; data.max_test_per_class=60; train.max_epochs=5; train.fixed_epochs=3; tune.n_trials=2; export.parity_texts=8"
OVERRIDES = ["-P", "datasets=sst2", "-P", "methods=none,smote", "-P", "sizes=16,64", "-P", f"set=cv.n_folds=3; {SMALL}"]


def _env(tmp: Path) -> dict[str, str]:
    """A user's shell: the venv's commands on PATH (as `make` puts them), its own MLflow store, no network."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db", "HF_HUB_OFFLINE": "1"}
    for var in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", "EMBALANCE_PARENT_RUN_ID"):
        env.pop(var, None)
    return env


def _run(cmd: list[str], cwd: Path, env: dict[str, str], ok: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if ok:
        assert out.returncode == 0, f"{cmd}: {out.stdout[-4000:]}{out.stderr[-4000:]}"
    return out


def _fresh_clone(dest: Path) -> Path:
    """The project's tracked files (as they are in this checkout) in a new git repository: what `git clone` gives a
    user, without a DVC cache; ``../shared/datasets`` resolves as it does beside a checkout."""
    (dest / "shared").mkdir(parents=True)
    (dest / "shared" / "datasets").symlink_to(SHARED)
    proj = dest / "proj"
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split("\0")
    for name in filter(None, files):
        src, dst = ROOT / name, proj / name
        if not src.exists() and not src.is_symlink():
            continue  # deleted in this checkout, not yet committed
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            dst.symlink_to(os.readlink(src))
        else:
            shutil.copy2(src, dst)
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "clone"]):
        subprocess.run(cmd, cwd=proj, check=True, capture_output=True)
    return proj


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str], str]:
    """A fresh clone after `mlflow run . --env-manager local -P …` (the README's way in with overrides)."""
    tmp = tmp_path_factory.mktemp("fresh")
    proj = _fresh_clone(tmp)
    env = _env(tmp)
    out = _run([str(BIN / "mlflow"), "run", ".", "--env-manager", "local", *OVERRIDES], proj, env)
    return proj, env, out.stdout + out.stderr


def test_mlflow_run_with_overrides_records_the_dvc_experiment(clone: tuple[Path, dict[str, str], str]) -> None:
    proj, env, log = clone
    assert "dvc exp run --name mlflow-" in log and "Running stage 'report'" in log, log[-3000:]
    exps = _run([str(BIN / "dvc"), "exp", "list", "--all-commits", "--name-only"], proj, env).stdout.split()
    assert any(name.startswith("mlflow-") for name in exps), exps
    params = yaml.safe_load((proj / "params.yaml").read_text())
    assert params["augment"]["methods"] == ["none", "smote"] and params["imbalance"]["sizes"] == [16, 64] and params["cv"]["n_folds"] == 3


def test_the_project_sees_only_its_own_pipeline(clone: tuple[Path, dict[str, str], str]) -> None:
    """The study is a DVC repository of its own: the project's status and metrics are the default pipeline's only."""
    proj, env, _ = clone
    status = _run([str(BIN / "dvc"), "status"], proj, env).stdout
    assert "Data and pipelines are up to date." in status, status
    shown = _run([str(BIN / "dvc"), "metrics", "show"], proj, env).stdout
    assert "studies/" not in shown and "reports/metrics/sst2.json" in shown and "acc_synthetic" in shown
    assert max(map(len, shown.splitlines())) <= 120, shown
    # The study still answers from its own folder (its outputs are in no cache a fresh clone has: listed, not broken).
    study = _run([str(BIN / "dvc"), "status"], proj / "studies" / "paper", env).stdout
    assert "prepare@imdb" in study and "not in cache" in study


def test_a_typo_in_params_costs_nothing(clone: tuple[Path, dict[str, str], str]) -> None:
    """typo -> `dvc repro` stops at the validate stage with the key named -> fix -> `dvc repro` re-runs no stage but
    the check: every output is where it was, byte for byte."""
    proj, env, _ = clone
    outputs = [proj / p for p in ("results/sst2/metrics.json", "results/sst2/folds.csv", "results/sst2/cells.csv", "reports/README.md", "models/sst2/export.json")]
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in outputs}
    good = (proj / "params.yaml").read_text()
    assert "  n_folds: 3\n" in good
    (proj / "params.yaml").write_text(good.replace("  n_folds: 3\n", "  n_fold: 3\n"))
    bad = _run([str(BIN / "dvc"), "repro"], proj, env, ok=False)
    assert bad.returncode != 0 and "n_fold" in bad.stdout + bad.stderr
    assert "Running stage 'validate'" in bad.stdout and "Running stage 'prepare" not in bad.stdout
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in outputs} == before
    (proj / "params.yaml").write_text(good)
    fixed = _run([str(BIN / "dvc"), "repro"], proj, env)
    assert [line for line in fixed.stdout.splitlines() if line.startswith("Running stage")] == ["Running stage 'validate':"], fixed.stdout
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in outputs} == before
    assert "Data and pipelines are up to date." in _run([str(BIN / "dvc"), "status"], proj, env).stdout


# Vega-Embed draws each plot as <svg class="marks"> (or a canvas); count the drawn ones with something in them.
DRAWN = """
const marks = [...document.querySelectorAll('svg.marks, canvas.marks')];
const drawn = marks.filter(m => m.tagName === 'CANVAS' ? m.width > 0 : m.querySelectorAll('path, line, rect').length > 3);
const images = [...document.querySelectorAll('img')];
return [document.querySelectorAll('.vega-embed').length, drawn.length, images.length, images.filter(i => i.complete && i.naturalWidth > 0).length];
"""


def test_dvc_plots_draw_offline(clone: tuple[Path, dict[str, str], str], tmp_path: Path) -> None:
    """`dvc plots show` writes a page that draws every plot in headless Chromium with the network off."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (chromium and driver):
        message = "needs headless Chromium and its driver: `apt-get install -y chromium chromium-driver`"
        pytest.fail(message) if os.environ.get("CI") else pytest.skip(message)
    proj, env, _ = clone
    out = _run([str(BIN / "dvc"), "plots", "show", "-o", str(tmp_path / "plots")], proj, env)
    assert "failed to load" not in out.stdout + out.stderr, out.stderr
    page = (tmp_path / "plots" / "index.html").read_text()
    assert "cdn.jsdelivr.net" not in page and "<script src=" not in page  # Vega is in the page itself
    n_vega = page.count("vegaEmbed(")
    assert n_vega >= 2, n_vega  # balanced accuracy and gain (one per baseline) at least
    artifacts = Path(os.environ.get("EMBALANCE_ARTIFACTS") or tmp_path)
    artifacts.mkdir(parents=True, exist_ok=True)
    shot = artifacts / "dvc_plots_offline.png"
    # No network at all: every host resolves to nothing and every proxy connection is refused.
    offline = ["--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>"]
    b = Browser(driver, chromium, tmp_path / "profile", extra_args=offline)
    try:
        b.get((tmp_path / "plots" / "index.html").as_uri())
        import time

        deadline, counts = time.monotonic() + 60, None
        while time.monotonic() < deadline:
            counts = b.execute(DRAWN)
            if counts[1] == n_vega and counts[3] == counts[2]:
                break
            time.sleep(0.5)
        b.screenshot(shot)
    finally:
        b.close()
    print(f"dvc plots screenshot: {shot}")
    embeds, drawn, images, loaded = counts
    assert drawn == n_vega == embeds and loaded == images, counts
