"""The MLflow UI in a real (headless) browser: after a tiny sweep, the run tree is there and expands to the folds; after
a tiny tune, export and a sweep of more than a page of runs, the links we print open every stage's run on the first page.

Needs Debian's ``chromium`` and ``chromium-driver`` (``apt-get install -y chromium chromium-driver``); driven over
the W3C WebDriver protocol with the standard library (tests/webdriver.py). Without them the test is skipped
locally and fails in CI (``CI`` set), so a CI machine without a browser can never pass it silently.
The screenshot is kept under ``$EMBALANCE_ARTIFACTS`` (or the test's tmp folder) and its path printed.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from embalance import tracking
from embalance.cli import main as cli_main

from .webdriver import browser, free_port, wait_for_http

pytestmark = pytest.mark.slow  # end to end on real services (STYLE.md 9): `make test` runs it, `make test-fast` skips it

# The expand/collapse button in the "Run Name" cell of a parent run (MLflow 3's runs table).
EXPANDER_OF = """
const name = arguments[0];
for (const row of document.querySelectorAll('[role=row]')) {
  const label = [...row.querySelectorAll('a span')].find(s => s.textContent.trim() === name);
  if (label) return row.querySelector('button[data-component-id$="runnamecellrenderer.tsx_46"]');
}
return null;
"""


def _browser_binaries() -> tuple[str, str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if chromium and driver:
        return chromium, driver
    message = "The MLflow UI test needs headless Chromium and its driver: `apt-get install -y chromium chromium-driver`."
    if os.environ.get("CI"):
        pytest.fail(message + " CI is set, so a missing browser is a failure, not a skip.")
    pytest.skip(message)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop the `mlflow ui` process group that this test started (the server and its workers)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _mlflow_ui(uri: str, tmp_path: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    mlflow_bin = str(Path(sys.executable).parent / "mlflow")
    log = (tmp_path / "mlflow-ui.log").open("wb")
    ui = subprocess.Popen(
        [mlflow_bin, "ui", "--backend-store-uri", uri, "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    log.close()
    return ui, port


def test_mlflow_ui_shows_cells_and_folds(tiny_params: dict, tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    chromium, driver = _browser_binaries()
    # The tiny sweep, on the session's prepared data and embeddings.
    shutil.copytree(tiny_data, tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params, sort_keys=False))
    assert cli_main(["sweep", "--dataset", "tiny", "--set", "augment.methods=[none, random, smote]"]) == 0
    uri = tiny_params["tracking"]["uri"]
    experiment = MlflowClient(tracking_uri=uri).get_experiment_by_name("embalance")
    n_runs = 1 + 3 * 2 + 3 * 2 * 2  # sweep, 3 methods x 2 sizes, 2 folds each
    (sweep,) = MlflowClient(tracking_uri=uri).search_runs([experiment.experiment_id], "tags.`embalance.run_type` = 'sweep'")
    assert sweep.info.run_name.startswith("sweep tiny 2-fold 3 methods x 2 sizes [")  # tells this sweep from others

    ui, port = _mlflow_ui(uri, tmp_path)
    artifacts = Path(os.environ.get("EMBALANCE_ARTIFACTS") or tmp_path)
    artifacts.mkdir(parents=True, exist_ok=True)
    shot = artifacts / "mlflow_ui_runs.png"
    try:
        wait_for_http(f"http://127.0.0.1:{port}/", 120, ui)
        with browser(driver, chromium, tmp_path / "chromium-profile") as b:
            # The address `make ui` prints opens on the training runs, not on MLflow 3's GenAI overview (the UI's default
            # workflow), and the Dataset column names the data each run used (logged inputs with their DVC hashes).
            b.get(f"http://127.0.0.1:{port}/#/experiments/{experiment.experiment_id}?workflowType=machine_learning")
            b.wait_for_text(["sweep tiny", f"{n_runs} matching runs", "tiny embeddings"], 90)
            assert f"/experiments/{experiment.experiment_id}/runs" in b.execute("return window.location.href")
            assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
            for close in b.find_all('button[data-component-id="mlflow.assistant.chat_panel.close"]'):
                b.click(close)  # the assistant panel would cover the table
            for handle in b.find_all('.ag-header-cell[col-id="attributes.`Run Name`"] .ag-header-cell-resize'):
                b.drag_by(handle, 150)  # widen "Run Name" so that the fold names are readable in the screenshot
            expand = [
                (sweep.info.run_name, ["none n=8", "random n=8", "smote n=8", "none n=32", "random n=32", "smote n=32"]),
                ("none n=8", ["none n=8 fold 0", "none n=8 fold 1"]),
                ("random n=32", ["random n=32 fold 0", "random n=32 fold 1"]),
            ]
            for name, children in expand:
                button = b.execute(EXPANDER_OF, name)
                assert button, f"No expand button in the row of run {name!r}; the page shows:\n{b.text()[:2000]}"
                b.click(button)
                b.wait_for_text(children, 30)
            text = b.text()
            b.screenshot(shot)
    finally:
        _stop(ui)
    print(f"MLflow UI screenshot: {shot}")
    assert shot.stat().st_size > 20_000
    for name in ("sweep tiny", "smote n=8", "none n=8 fold 0", "none n=8 fold 1", "random n=32 fold 1"):
        assert name in text, name
    assert "smote n=8 fold 0" not in text  # that cell stays collapsed


# The rows of the runs table, top to bottom, by their "Run Name" link text.
ROW_NAMES = """
return [...document.querySelectorAll('.ag-center-cols-container [role=row], .ag-pinned-left-cols-container [role=row]')]
  .sort((a, b) => a.getBoundingClientRect().top - b.getBoundingClientRect().top)
  .map(row => [...row.querySelectorAll('a span')].map(s => s.textContent.trim()).find(t => t)).filter(Boolean);
"""


def test_every_stage_run_is_on_the_first_page(tiny_params: dict, tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tune and export first, then a sweep of more runs than the UI's first page (100): sorted by start time (the UI's
    default) the tuning study and the export would be behind "Load more"; the view our links open lists them first."""
    chromium, driver = _browser_binaries()
    shutil.copytree(tiny_data, tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    p = tiny_params
    p["cv"]["n_folds"] = 8
    p["augment"]["methods"] = ["none", "random", "smote", "undersample", "weighted", "logit_adjusted"]
    p["tune"].update(sizes=[32], n_trials=2, methods=["random"], storage=f"sqlite:///{tmp_path}/optuna.db", space={"train.lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}})
    p["export"].update(parity_texts=8)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    assert cli_main(["tune", "--dataset", "tiny"]) == 0
    assert cli_main(["export", "--dataset", "tiny"]) == 0
    assert cli_main(["sweep", "--dataset", "tiny"]) == 0
    uri = p["tracking"]["uri"]
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("embalance")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    top = {r.info.run_name: r for r in runs if r.data.tags[tracking.LEVEL_TAG] == "0"}
    (sweep,) = [r for r in top.values() if r.data.tags["embalance.run_type"] == "sweep"]
    assert set(top) == {"tune tiny n=32", "export tiny", sweep.info.run_name}
    assert all(tracking.MLFLOW_PARENT_RUN_ID not in r.data.tags for r in top.values())
    assert len(runs) == 5 + 1 + 1 + 12 * 9 > 100  # study, 2 trials, tuned and default; export; sweep, 12 cells of 8 folds
    newest = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"], max_results=100)
    assert not {r.info.run_id for r in newest} & {top["tune tiny n=32"].info.run_id, top["export tiny"].info.run_id}  # today's default page
    fold = next(r for r in runs if r.data.tags["embalance.run_type"] == "fold" and r.data.tags["embalance.status"] == "ok")
    assert {m.step for m in client.get_metric_history(fold.info.run_id, "curves/val_loss")} >= {1, 2}

    ui, port = _mlflow_ui(uri, tmp_path)
    base = f"http://127.0.0.1:{port}"
    artifacts = Path(os.environ.get("EMBALANCE_ARTIFACTS") or tmp_path)
    artifacts.mkdir(parents=True, exist_ok=True)
    shot, run_shot = artifacts / "mlflow_ui_first_page.png", artifacts / "mlflow_ui_fold_run.png"
    try:
        wait_for_http(f"{base}/", 120, ui)
        with browser(driver, chromium, tmp_path / "chromium-profile") as b:
            b.get(tracking.experiment_url(base, experiment.experiment_id))
            b.wait_for_text(["export tiny", "tune tiny n=32", sweep.info.run_name, "100 matching runs", "Load more", "test_balanced_accuracy_mean"], 90)
            for close in b.find_all('button[data-component-id="mlflow.assistant.chat_panel.close"]'):
                b.click(close)
            rows = b.execute(ROW_NAMES)
            assert sorted(rows[:3]) == sorted(top), rows[:10]  # the three stage runs head the first page, no "Load more" needed
            assert "sweep" not in " ".join(rows[3:])
            header = b.text()
            b.screenshot(shot)
            # A run link opens the machine-learning view (the model registry is in its side bar) and the fold's curves first.
            b.get(tracking.run_url(base, experiment.experiment_id, fold.info.run_id).replace("?", "/model-metrics?"))
            text = b.wait_for_text([fold.info.run_name, "curves\n(", "Model metrics\n(", "Model registry"], 60)
            b.screenshot(run_shot)
    finally:
        _stop(ui)
    print(f"MLflow UI screenshots: {shot} {run_shot}")
    for column in ("method", "minority_size", "test_balanced_accuracy_mean", "test_balanced_accuracy"):
        assert column in header, column
    assert text.index("curves\n(") < text.index("Model metrics\n(")  # the sections' headings: the curves, then the bars
