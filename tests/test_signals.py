"""A signal to the command a user started stops everything it started: no stage is left running, and a second run
goes on from the finished work."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from .conftest import BIN, git_dvc_project, project_env, small_pipeline_params


def _processes_of(proj: Path) -> list[psutil.Process]:
    """Live processes working in ``proj`` or naming it on their command line (zombies excepted: they run nothing)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "cwd", "status"]):
        info = proc.info
        if proc.pid == os.getpid() or info["status"] == psutil.STATUS_ZOMBIE:
            continue
        if (info["cwd"] or "").startswith(str(proj)) or str(proj) in " ".join(info["cmdline"] or []):
            found.append(proc)
    return found


def _wait_for_tune(proj: Path, launcher: subprocess.Popen, log: Path, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert launcher.poll() is None, log.read_text()[-4000:]
        for proc in _processes_of(proj):
            try:
                cmdline = proc.cmdline()
            except psutil.NoSuchProcess:
                continue
            if any(Path(a).name == "embalance" for a in cmdline) and "tune" in cmdline:
                time.sleep(3)  # into its trials
                return
        time.sleep(0.5)
    raise AssertionError(f"No `embalance tune` process within {timeout:.0f} s:\n{log.read_text()[-4000:]}")


def _stopped_and_resumed(cmd: list[str], tiny_params: dict, tmp_path: Path) -> None:
    """``cmd`` started in a tiny project, SIGTERM to it once `embalance tune` runs: within 10 s no process of the
    project is left; then `embalance pipeline` finishes the work and DVC says it is up to date."""
    p = small_pipeline_params(tiny_params, n_trials=40)
    proj = tmp_path / "proj"
    git_dvc_project(proj, p)
    env = project_env(p["tracking"]["uri"])
    log = tmp_path / "first.log"
    with log.open("w") as out:
        launcher = subprocess.Popen(cmd, cwd=proj, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_for_tune(proj, launcher, log)
        launcher.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while (_processes_of(proj) or launcher.poll() is None) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = [(proc.pid, " ".join(proc.cmdline())) for proc in _processes_of(proj)]
        assert launcher.poll() is not None and not left, f"left running 10 s after SIGTERM: {left}\n{log.read_text()[-4000:]}"
    finally:
        for proc in _processes_of(proj):
            proc.kill()
        launcher.kill()
        launcher.wait()
    again = subprocess.run([str(BIN / "embalance"), "pipeline"], cwd=proj, env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stdout[-4000:] + again.stderr[-4000:]
    status = subprocess.run([str(BIN / "dvc"), "status"], cwd=proj, env=env, capture_output=True, text=True)
    assert "up to date" in status.stdout, status.stdout + status.stderr


@pytest.mark.slow
def test_sigterm_to_the_pipeline_stops_its_stages(tiny_params: dict, tmp_path: Path) -> None:
    _stopped_and_resumed([str(BIN / "embalance"), "pipeline"], tiny_params, tmp_path)


@pytest.mark.slow
def test_sigterm_to_mlflow_run_stops_the_pipeline_and_its_stages(tiny_params: dict, tmp_path: Path) -> None:
    """`mlflow run` dies of SIGTERM without passing it on: the pipeline notices its launcher is gone and stops."""
    _stopped_and_resumed([str(BIN / "mlflow"), "run", ".", "--env-manager", "local"], tiny_params, tmp_path)
