"""A minimal W3C WebDriver client over HTTP (standard library only) for the browser test.

It drives ``chromedriver`` (Debian's ``chromium-driver``) with headless ``chromium``: start a session, open a URL,
run JavaScript, click elements, take a screenshot. That is all the MLflow UI test needs, so the test suite does
not depend on selenium.
"""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

ELEMENT_KEY = "element-6066-11e4-a52e-4f735466cecf"  # the W3C key of an element reference

# Flags needed in containers and offline CI: no sandbox (root), no GPU, no network chatter, a fresh profile.
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1600,1300",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_http(url: str, timeout_s: float, proc: subprocess.Popen[Any] | None = None) -> None:
    """Poll ``url`` until it answers (any HTTP status); fail early when ``proc`` exits."""
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with code {proc.returncode} before {url} answered.")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return
        except OSError as e:
            last = e
            time.sleep(0.25)
    raise TimeoutError(f"{url} did not answer within {timeout_s:.0f} s (last error: {last}).")


class WebDriverError(RuntimeError):
    pass


class Browser:
    """One chromedriver process and one browser session."""

    def __init__(self, chromedriver: str, chromium: str, user_data_dir: Path, extra_args: Sequence[str] = ()) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([chromedriver, f"--port={self.port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.session: str | None = None
        try:
            wait_for_http(f"{self.base}/status", 30, self.proc)
            caps = {
                "browserName": "chrome",
                "goog:chromeOptions": {"binary": chromium, "args": [*CHROMIUM_ARGS, f"--user-data-dir={user_data_dir}", *extra_args]},
            }
            value = self._call("POST", "/session", {"capabilities": {"alwaysMatch": caps}})
            self.session = value["sessionId"]
        except BaseException:
            self.close()
            raise

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None, timeout_s: float = 60) -> Any:
        data = json.dumps(body if body is not None else {}).encode() if method == "POST" else None
        req = urllib.request.Request(self.base + path, data=data, method=method, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout_s) as resp:
                payload = json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as e:
            payload = json.loads(e.read() or b"{}")
            err = payload.get("value", {})
            raise WebDriverError(f"{method} {path}: {err.get('error')}: {str(err.get('message'))[:500]}") from e
        return payload.get("value")

    def _s(self, path: str) -> str:
        return f"/session/{self.session}{path}"

    def get(self, url: str) -> None:
        self._call("POST", self._s("/url"), {"url": url})

    def execute(self, script: str, *args: Any) -> Any:
        return self._call("POST", self._s("/execute/sync"), {"script": script, "args": list(args)})

    def find_all(self, css: str) -> list[dict[str, str]]:
        return self._call("POST", self._s("/elements"), {"using": "css selector", "value": css})

    def click(self, element: dict[str, str]) -> None:
        self._call("POST", self._s(f"/element/{element[ELEMENT_KEY]}/click"))

    def drag_by(self, element: dict[str, str], dx: int, dy: int = 0) -> None:
        """Press the mouse on ``element``, move it by (dx, dy) and release (e.g. to resize a table column)."""
        origin = {ELEMENT_KEY: element[ELEMENT_KEY]}
        actions = [
            {"type": "pointerMove", "duration": 0, "origin": origin, "x": 0, "y": 0},
            {"type": "pointerDown", "button": 0},
            {"type": "pointerMove", "duration": 200, "origin": "pointer", "x": dx, "y": dy},
            {"type": "pointerUp", "button": 0},
        ]
        self._call("POST", self._s("/actions"), {"actions": [{"type": "pointer", "id": "mouse", "parameters": {"pointerType": "mouse"}, "actions": actions}]})
        self._call("DELETE", self._s("/actions"))

    def text(self) -> str:
        return str(self.execute("return document.body ? document.body.innerText : '';"))

    def wait_for_text(self, needles: Sequence[str], timeout_s: float = 60) -> str:
        """Wait until the page's visible text holds every needle; return that text."""
        deadline = time.monotonic() + timeout_s
        text = ""
        while time.monotonic() < deadline:
            text = self.text()
            if all(n in text for n in needles):
                return text
            time.sleep(0.5)
        missing = [n for n in needles if n not in text]
        raise TimeoutError(f"The page did not show {missing} within {timeout_s:.0f} s; it shows:\n{text[:3000]}")

    def screenshot(self, path: Path) -> Path:
        path.write_bytes(base64.b64decode(self._call("GET", self._s("/screenshot"))))
        return path

    def close(self) -> None:
        if self.session is not None:
            with contextlib.suppress(OSError, WebDriverError):
                self._call("DELETE", self._s(""), timeout_s=20)
            self.session = None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@contextlib.contextmanager
def browser(chromedriver: str, chromium: str, user_data_dir: Path) -> Iterator[Browser]:
    b = Browser(chromedriver, chromium, user_data_dir)
    try:
        yield b
    finally:
        b.close()
