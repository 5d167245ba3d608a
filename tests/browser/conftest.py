"""Fixtures for the browser tests: a JupyterLab server and headless Chromium (Playwright).

The tests in this folder are marked ``browser``. They run only when asked for, so that the
README's plain ``pytest`` stays fast and does not depend on what a machine happens to have:

- ``pytest -m browser tests/browser -o addopts=""`` runs them, or skips them with the reason
  when Playwright or Chromium is missing;
- ``SSDLEARN_BROWSER_TESTS=1`` runs them too and turns a missing dependency into a failure
  (``.ci/run`` sets it, so CI cannot pass by skipping).

Chromium is Debian's ``chromium`` package at ``/usr/bin/chromium`` (``SSDLEARN_CHROMIUM``
names another binary); Playwright's own browser download is not used.

JupyterLab serves a temporary copy of ``lessons/`` on a free loopback port with a random
token, with its config, runtime, settings and workspace folders in a temporary directory:
nothing is written into the repository but ``test-artifacts/browser/`` (screenshots and the
server's log). The server and its kernels are shut down when the session ends.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LESSONS = REPO / "lessons"
ARTIFACTS = REPO / "test-artifacts" / "browser"
CHROMIUM = os.environ.get("SSDLEARN_CHROMIUM", "/usr/bin/chromium")
REQUIRED = os.environ.get("SSDLEARN_BROWSER_TESTS") == "1"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
SERVER_START_S = 120  # JupyterLab answers in a few seconds; a loaded CI machine is slower


def _missing_dependency() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return 'Playwright is not installed (pip install -e ".[browser]")'
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        return f"no Chromium at {CHROMIUM} (apt-get install chromium, or set SSDLEARN_CHROMIUM)"
    try:
        import jupyterlab  # noqa: F401
    except ImportError:
        return 'JupyterLab is not installed (pip install -e ".[dev]")'
    return None


def _asked_for(config: pytest.Config) -> bool:
    markexpr = config.getoption("markexpr", default="") or ""
    return REQUIRED or ("browser" in markexpr and "not browser" not in markexpr)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    browser_items = [item for item in items if item.get_closest_marker("browser")]
    if not browser_items:
        return
    if not _asked_for(config):
        reason = 'browser test: run it with `pytest -m browser tests/browser -o addopts=""`'
    else:
        reason = _missing_dependency()
        if reason is None or REQUIRED:  # when required, the fixture fails with the reason
            return
        reason = f"browser test skipped: {reason}"
    for item in browser_items:
        item.add_marker(pytest.mark.skip(reason=reason))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    setattr(item, f"report_{report.when}", report)  # the page fixture screenshots failures
    return report


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for stale in ARTIFACTS.glob("*.png"):  # screenshots of an earlier run
        stale.unlink()
    return ARTIFACTS


# ---------------------------------------------------------------------------------------
# JupyterLab
# ---------------------------------------------------------------------------------------


@dataclass
class JupyterLab:
    url: str  # http://127.0.0.1:PORT
    token: str
    root: Path  # the temporary copy of lessons/ that it serves

    def lab_url(self, notebook: str) -> str:
        return f"{self.url}/lab/tree/{notebook}?token={self.token}"

    def api(self, path: str, method: str = "GET") -> object:
        request = urllib.request.Request(
            f"{self.url}/api/{path}", method=method, data=b"" if method == "POST" else None,
            headers={"Authorization": f"token {self.token}"},
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            body = response.read()
        return json.loads(body) if body else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _write_settings(settings: Path) -> None:
    """User settings for this server only: no news, no update checks, no autosave."""
    for plugin, values in {
        "@jupyterlab/apputils-extension/notification": {
            "fetchNews": "false", "checkForUpdates": False,
        },
        "@jupyterlab/docmanager-extension/plugin": {"autosave": False},
    }.items():
        path = settings / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))


def _stop(process: subprocess.Popen, lab: JupyterLab | None) -> None:
    """Shut the server and its kernels down; kill whatever is left."""
    try:
        import psutil

        children = psutil.Process(process.pid).children(recursive=True)  # kernels included
    except Exception:  # psutil missing, or the server already gone
        children = []
    if process.poll() is None:
        try:
            if lab is not None:
                lab.api("shutdown", method="POST")  # stops the kernels too
            process.wait(timeout=20)
        except (OSError, urllib.error.URLError, subprocess.TimeoutExpired):
            pass
    for sig, wait_s in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        if process.poll() is not None:
            break
        try:
            os.killpg(process.pid, sig)  # the server runs in its own process group
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            pass
    for child in children:  # kernels run in their own sessions, outside the group
        try:
            child.kill()
        except Exception:
            pass


@pytest.fixture(scope="session")
def jupyterlab(tmp_path_factory: pytest.TempPathFactory, artifacts: Path) -> Iterator[JupyterLab]:
    reason = _missing_dependency()
    if reason is not None:
        pytest.fail(f"SSDLEARN_BROWSER_TESTS=1 but {reason}")

    root = tmp_path_factory.mktemp("lessons")
    for notebook in LESSONS.glob("*.ipynb"):
        shutil.copy2(notebook, root / notebook.name)
    if (LESSONS / "assets").is_dir():
        shutil.copytree(LESSONS / "assets", root / "assets")
    home = tmp_path_factory.mktemp("jupyter")
    _write_settings(home / "settings")
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "JUPYTER_CONFIG_DIR": str(home / "config"),
        "JUPYTER_DATA_DIR": str(home / "data"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
        "IPYTHONDIR": str(home / "ipython"),
        "PYTHONUNBUFFERED": "1",
    }
    token, port = secrets.token_hex(24), _free_port()
    command = [
        sys.executable, "-m", "jupyter", "lab", "--no-browser",
        "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # CI containers run as root
        command.append("--ServerApp.allow_root=True")
    log_path = artifacts / "jupyterlab.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=root, env=env, stdout=log,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
    lab = JupyterLab(f"http://127.0.0.1:{port}", token, root)
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with {process.returncode}")
            try:
                lab.api("status")
                break
            except (OSError, urllib.error.URLError):
                if time.monotonic() > deadline:
                    message = f"JupyterLab did not answer in {SERVER_START_S} s"
                    raise RuntimeError(message) from None
                time.sleep(0.5)
    except RuntimeError as error:
        _stop(process, None)
        tail = log_path.read_text(errors="replace")[-3000:]
        pytest.fail(f"{error}; the end of {log_path}:\n{tail}")
    try:
        yield lab
    finally:
        _stop(process, lab)


# ---------------------------------------------------------------------------------------
# Chromium
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def browser_context(tmp_path_factory: pytest.TempPathFactory, jupyterlab: JupyterLab):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),  # a fresh user data dir
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1000}, device_scale_factor=1,
        )
        context.set_default_timeout(60_000)
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def page(browser_context, request: pytest.FixtureRequest, artifacts: Path):
    page = browser_context.new_page()
    yield page
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        try:
            page.screenshot(path=str(artifacts / f"{request.node.name}-failure.png"),
                            full_page=True)
        except Exception:
            pass
    page.close()
