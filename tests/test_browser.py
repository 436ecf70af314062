"""The MLflow UI in a real (headless) browser: after a tiny sweep, the run tree is there and expands to the folds.

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

    port = free_port()
    mlflow_bin = str(Path(sys.executable).parent / "mlflow")
    log = (tmp_path / "mlflow-ui.log").open("wb")
    ui = subprocess.Popen(
        [mlflow_bin, "ui", "--backend-store-uri", uri, "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
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
        log.close()
    print(f"MLflow UI screenshot: {shot}")
    assert shot.stat().st_size > 20_000
    for name in ("sweep tiny", "smote n=8", "none n=8 fold 0", "none n=8 fold 1", "random n=32 fold 1"):
        assert name in text, name
    assert "smote n=8 fold 0" not in text  # that cell stays collapsed
