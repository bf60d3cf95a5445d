"""Notebook instances on a real ``mle server``: ``mle notebooks create``, then Chromium (Playwright)
signs in to the console and opens JupyterLab through the server's proxy, runs a cell that
prints the server's jobs and saves; the save is a git commit with the cell's source and without
its output; anonymous access is refused; idle instances stop, but not while a kernel is busy or
a job the notebook submitted runs; a server restart keeps instances and files; ``delete`` keeps
the files unless ``--delete-disk``."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.e2e.helpers import ECHO_TRAINER, ServerProcess, build_package, job_body, short_home, write_trainer

pytestmark = pytest.mark.e2e
pytest.importorskip("jupyterlab")

NOTEBOOKS = "/v1/projects/mlengine/notebooks"
CHROMIUM = "/usr/bin/chromium"


def _kill_services(home: Path) -> None:
    """Services outlive the server: kill every process group working under ``home``."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if str(home) in cmdline and "jupyterlab" in cmdline:
            with contextlib.suppress(OSError):
                os.killpg(os.getpgid(int(proc.name)), signal.SIGKILL)


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    srv = ServerProcess(short_home(), {"MLE_SERVICE_PROXY_WAIT": "60"})
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()
        _kill_services(srv.home)


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_package(write_trainer(tmp_path_factory.mktemp("pkg"), ECHO_TRAINER).parent)


def notebook(srv: ServerProcess, name: str) -> dict[str, Any]:
    response = srv.api("GET", f"{NOTEBOOKS}/{name}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def wait_state(srv: ServerProcess, name: str, states: tuple[str, ...], timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    current = notebook(srv, name)
    while current["state"] not in states:
        if time.monotonic() > deadline:
            raise AssertionError(f"notebook {name} after {timeout}s: {current}")
        time.sleep(0.2)
        current = notebook(srv, name)
    return current


def proxy(srv: ServerProcess, name: str) -> str:
    return f"/v1/projects/mlengine/services/{name}/proxy/"


def execute_in_new_kernel(srv: ServerProcess, name: str, code: str) -> str:
    """Start a kernel through the proxy, send it ``code`` over its websocket and hang up
    (the kernel goes on running it); returns the kernel id."""
    from websockets.sync.client import connect

    kernel = srv.api("POST", proxy(srv, name) + "api/kernels", json={"name": "python3"})
    assert kernel.status_code == 201, kernel.text
    kernel_id = kernel.json()["id"]
    url = srv.url.replace("http://", "ws://") + proxy(srv, name) + f"api/kernels/{kernel_id}/channels"
    session = uuid.uuid4().hex
    with connect(url, additional_headers={"Authorization": f"Bearer {srv.token}"}) as ws:
        ws.send(json.dumps({
            "header": {"msg_id": uuid.uuid4().hex, "msg_type": "execute_request", "session": session,
                       "username": "test", "version": "5.3", "date": ""},
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
            "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {},
                        "allow_stdin": False, "stop_on_error": True}}))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # until the kernel says it started on it
            message = json.loads(ws.recv(timeout=60))
            if message.get("msg_type") == "status" and message["content"].get("execution_state") == "busy":
                break
    return str(kernel_id)


def test_browser_runs_a_cell_and_the_save_is_committed_without_output(server: ServerProcess, package: Path) -> None:
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed")
    marker = "marker-" + uuid.uuid4().hex[:8]
    submitted = server.api("POST", "/v1/projects/mlengine/jobs", json=job_body(f"job_{marker[7:]}", package))
    assert submitted.status_code == 200, submitted.text
    created = server.mle("notebooks", "create", "lab", "--idle-timeout", "0", "--format", "json", check=True)
    assert json.loads(created.stdout)["owner"].startswith("user:")
    wait_state(server, "lab", ("RUNNING",))

    base = proxy(server, "lab")
    anonymous = httpx.get(server.url + base + "lab")
    assert anonymous.status_code == 401
    assert httpx.get(server.url + base + "api/contents", cookies={"mle_token": "wrong"}).status_code == 401
    empty = {"type": "notebook", "content": {"nbformat": 4, "nbformat_minor": 5, "metadata": {
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "cells": [{"cell_type": "code", "source": "", "metadata": {}, "outputs": [], "execution_count": None,
                   "id": "first"}]}}
    assert server.api("PUT", base + "api/contents/probe.ipynb", json=empty).status_code in (200, 201)

    source = f"%load_ext mlengine\nprint('{marker}')\n%mle jobs list --format=value(jobId)"
    connect = server.mle("notebooks", "connect", "lab", check=True).stdout.strip()
    assert connect.endswith("/console/projects/mlengine/notebooks/lab/open") and "token" not in connect
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto(connect)  # mlengine's sign-in (the console's), then JupyterLab through the proxy
            page.fill("input[name=token]", server.token)
            page.click("button[type=submit]")
            page.wait_for_url(re.compile(r".*/services/lab/proxy/lab(\?.*)?$"), timeout=90_000)
            assert "access_token" not in page.url
            page.goto(server.url + base + "lab/tree/probe.ipynb")
            try:
                page.wait_for_selector(".jp-Notebook .jp-Cell .cm-content", timeout=90_000)
                until(page, ".jp-Notebook-ExecutionIndicator[data-status='idle']")
                page.click(".jp-Notebook .jp-Cell .cm-content")
                page.keyboard.type(source)
                page.wait_for_selector(f".jp-Cell .cm-content:has-text('{marker}')", timeout=10_000)
                page.keyboard.press("Shift+Enter")
                until(page, f".jp-OutputArea-output:has-text('{marker}')", rerun=FIRST_CELL)
                until(page, f".jp-OutputArea-output:has-text('job_{marker[7:]}')")
            except Exception:
                page.screenshot(path=str(server.home / "notebook-failure.png"))
                raise
            page.keyboard.press("Control+s")
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                commits = server.api("GET", f"{NOTEBOOKS}/lab/history").json()["commits"]
                if commits and commits[0]["message"] == "Save probe.ipynb" and _committed(server, "lab", marker):
                    break
                time.sleep(0.5)
        finally:
            browser.close()

    committed = _committed(server, "lab", marker)
    assert committed is not None, "the browser's save was not committed"
    assert f"print('{marker}')" in committed, "the commit holds the cell's source"
    assert f"job_{marker[7:]}" not in committed and '"outputs": []' in committed, "and not its output"
    on_disk = (Path(notebook(server, "lab")["diskPath"]) / "probe.ipynb").read_text()
    assert f"job_{marker[7:]}" in on_disk, "the file itself keeps its outputs"
    history = server.mle("notebooks", "history", "lab", check=True).stdout
    assert "Save probe.ipynb" in history and "Notebook instance created" in history


FIRST_CELL = ".jp-Notebook .jp-Cell >> nth=0 >> .cm-content"


def until(page: Any, selector: str, timeout: float = 90, rerun: str | None = None) -> None:
    """Wait for ``selector``, accepting the kernel JupyterLab proposes if it asks (its "Select
    Kernel" dialog comes up when a cell is run while the kernel is still starting on a loaded
    machine; the run is then lost, so the cell ``rerun`` names is run again)."""
    deadline = time.monotonic() + timeout
    last_run = time.monotonic()
    while page.locator(selector).count() == 0:
        if time.monotonic() > deadline:
            raise AssertionError(f"{selector} did not appear in {timeout}s")
        accept = page.locator(".jp-Dialog .jp-mod-accept")
        lost = False
        if accept.count():
            accept.first.click()
            lost = True
        elif rerun and time.monotonic() - last_run > 20:  # not even queued ("[ ]:", not "[*]:")
            lost = page.locator(".jp-Notebook .jp-Cell >> nth=0 >> .jp-InputPrompt").inner_text().strip() == "[ ]:"
        if rerun and lost:
            page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=90_000)
            page.click(rerun)
            page.keyboard.press("Shift+Enter")
            last_run = time.monotonic()
        page.wait_for_timeout(500)


def _committed(srv: ServerProcess, name: str, marker: str) -> str | None:
    disk = Path(notebook(srv, name)["diskPath"])
    shown = subprocess.run(["git", "-C", str(disk), "show", "HEAD:probe.ipynb"], capture_output=True, text=True)
    return shown.stdout if shown.returncode == 0 and marker in shown.stdout else None


def test_idle_stops_only_without_busy_kernels_and_running_jobs(server: ServerProcess, package: Path) -> None:
    # The notebook's job first: queued or running, it keeps its instance awake from the start.
    body = job_body("nb_job", package, args=["--sleep", "25"])
    body["labels"] = {"mlengine-notebook": "jobbed"}
    assert server.api("POST", "/v1/projects/mlengine/jobs", json=body).status_code == 200
    for name in ("busy", "jobbed", "quiet"):
        server.mle("notebooks", "create", name, "--idle-timeout", "6s", check=True)
    wait_state(server, "busy", ("RUNNING",))
    execute_in_new_kernel(server, "busy", "import time; time.sleep(20)")
    busy_until = time.monotonic() + 20

    stopped = wait_state(server, "quiet", ("STOPPED",), timeout=90)
    assert stopped["stopReason"] == "IDLE"
    while server.job("nb_job")["state"] not in ("SUCCEEDED", "FAILED", "CANCELLED"):
        # read after the job: an instance may stop once its job has ended, not before
        assert notebook(server, "jobbed")["state"] in ("STARTING", "RUNNING"), "a running job keeps it"
        if time.monotonic() < busy_until - 3:
            assert notebook(server, "busy")["state"] == "RUNNING", "a busy kernel keeps the instance"
        time.sleep(1)
    while time.monotonic() < busy_until - 3:
        assert notebook(server, "busy")["state"] == "RUNNING", "a busy kernel keeps the instance"
        time.sleep(1)
    assert server.job("nb_job")["state"] == "SUCCEEDED"
    assert wait_state(server, "busy", ("STOPPED",), timeout=60)["stopReason"] == "IDLE"
    assert wait_state(server, "jobbed", ("STOPPED",), timeout=60)["stopReason"] == "IDLE"
    disks = [Path(notebook(server, name)["diskPath"]) for name in ("busy", "jobbed", "quiet")]
    assert all(disk.is_dir() for disk in disks)
    for name in ("busy", "jobbed", "quiet"):
        server.mle("notebooks", "delete", name, "--quiet", "--delete-disk", check=True)
    assert not any(disk.exists() for disk in disks), "delete --delete-disk removes the directory"


def test_restart_keeps_instances_and_files_and_delete_keeps_the_disk(server: ServerProcess,
                                                                     tmp_path: Path) -> None:
    remote = tmp_path / "keep.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(remote)], check=True)
    server.mle("notebooks", "create", "keep", "--idle-timeout", "0", "--git-remote", str(remote), check=True)
    disk = Path(wait_state(server, "keep", ("RUNNING",))["diskPath"])
    saved = server.api("PUT", proxy(server, "keep") + "api/contents/kept.txt",
                       json={"type": "file", "format": "text", "content": "kept across restarts"})
    assert saved.status_code in (200, 201), saved.text
    deadline = time.monotonic() + 30  # committed, then pushed from inside the sandbox
    pushed = ""
    while "Save kept.txt" not in pushed and time.monotonic() < deadline:
        time.sleep(0.5)
        pushed = subprocess.run(["git", "-C", str(remote), "log", "--format=%s", "main"], capture_output=True,
                                text=True).stdout
    assert "Save kept.txt" in pushed, "every save is pushed to --git-remote"
    server.stop()
    server.start()
    wait_state(server, "keep", ("RUNNING",))
    read = server.api("GET", proxy(server, "keep") + "api/contents/kept.txt")
    assert read.status_code == 200 and read.json()["content"] == "kept across restarts", read.text
    assert "keep" in server.mle("notebooks", "list", "--format", "value(name)", check=True).stdout

    server.mle("notebooks", "delete", "keep", "--quiet", check=True)
    assert server.api("GET", f"{NOTEBOOKS}/keep").status_code == 404
    assert (disk / "kept.txt").exists(), "without --delete-disk the files stay"
