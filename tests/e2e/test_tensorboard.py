"""TensorBoard for a job (issue 13.3) on a real server: a training job with ``enableWebAccess``
gets its TensorBoard started with it and named in ``trainingOutput.webAccessUris``;
``mle tensorboard JOB`` prints the same URL; a browser (Playwright, the system's Chromium)
opens it through the server's authenticated proxy and sees the scalars the trainer wrote.
The screenshot goes to ``MLE_CONSOLE_SCREENSHOTS`` (docs/console/ when refreshing the docs)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.e2e.helpers import ServerProcess, _kill_leftovers, build_package, job_body, short_home, write_trainer

pytestmark = pytest.mark.e2e
sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = "/usr/bin/chromium"
JOBS = "/v1/projects/mlengine/jobs"
SHOTS = Path(os.environ.get("MLE_CONSOLE_SCREENSHOTS") or tempfile.mkdtemp(prefix="mle-shots-"))

#: Writes tf.summary-style scalars ("loss", 5 steps) below its --job-dir, as Keras' callback does.
TRAINER = """
import argparse, os, sys, time, types
parser = argparse.ArgumentParser()
parser.add_argument("--job-dir")
args, _ = parser.parse_known_args()
sys.modules.setdefault("tensorboard.compat.notf", types.ModuleType("notf"))  # no TensorFlow needed
from tensorboard.compat.proto.event_pb2 import Event
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.summary.writer.event_file_writer import EventFileWriter

writer = EventFileWriter(os.path.join(args.job_dir, "train"))
for step in range(5):
    value = Summary.Value(tag="loss", simple_value=1.0 / (step + 1))
    writer.add_event(Event(wall_time=time.time(), step=step, summary=Summary(value=[value])))
writer.close()
print("wrote 5 scalars", flush=True)
"""


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    srv = ServerProcess(short_home()).start()
    yield srv
    srv.stop()
    _kill_leftovers(srv.home)


def _wait(server: ServerProcess, job_id: str, timeout: float = 180) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        job = server.job(job_id)
        if job["state"] in ("SUCCEEDED", "FAILED", "CANCELLED") or time.monotonic() > deadline:
            return job
        time.sleep(0.5)


def test_tensorboard_of_a_job_in_a_browser(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> None:
    root = tmp_path_factory.mktemp("tb-trainer")
    write_trainer(root, TRAINER)
    package = build_package(root)
    job_dir = tmp_path_factory.mktemp("tb-jobdir") / "out"

    refused = server.api("POST", JOBS, json=job_body("tb_nodir", package, enableWebAccess=True))
    assert refused.status_code == 400 and "trainingInput.enableWebAccess" in refused.json()["error"]["message"]

    created = server.api("POST", JOBS, json=job_body("tb_job", package, jobDir=str(job_dir), enableWebAccess=True))
    assert created.status_code == 200, created.text
    url = created.json()["trainingOutput"]["webAccessUris"]["tensorboard"]
    assert url == f"{server.url}/v1/projects/mlengine/services/tb-tb_job/proxy/"
    assert server.job("tb_job")["trainingOutput"]["webAccessUris"] == {"tensorboard": url}
    job = _wait(server, "tb_job")
    assert job["state"] == "SUCCEEDED", job

    env = {**os.environ, "MLE_API_URL": server.url, "MLE_TOKEN": server.token, "MLE_HOME": str(server.home)}
    printed = subprocess.run([sys.executable, "-m", "mlengine.cli.main", "tensorboard", "tb_job", "--no-token"],
                             env=env, capture_output=True, text=True, timeout=120)
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.strip().splitlines()[-1] == url

    prefix = url[len(server.url):]
    deadline = time.monotonic() + 60
    while True:  # TensorBoard reloads its logdir every few seconds
        tags = server.api("GET", prefix + "data/plugin/scalars/tags")
        if tags.status_code == 200 and "loss" in tags.json().get("train", {}) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert "loss" in tags.json().get("train", {}), tags.text

    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed (scripts/setup.sh installs it)")
    with sync_api.sync_playwright() as playwright:
        args = ["--no-sandbox"] if os.geteuid() == 0 else []  # Chromium refuses root without it
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=args)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            anonymous = page.goto(url)
            assert anonymous is not None and anonymous.status == 401  # the proxy wants a token
            page.goto(url + "?access_token=" + server.token)  # once: a cookie for the tab, then no token
            assert "access_token" not in page.url
            page.get_by_text("loss", exact=True).first.wait_for(timeout=60_000)
            page.get_by_text("train", exact=True).first.wait_for(timeout=10_000)
            SHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SHOTS / "tensorboard_web_access.png"))
        finally:
            browser.close()
    assert server.api("DELETE", "/v1/projects/mlengine/services/tb-tb_job").status_code == 200
