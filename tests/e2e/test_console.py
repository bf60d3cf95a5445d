"""The console in a real browser (Playwright with the system's Chromium) against a real server:
sign in, watch a running job's live log, viewer refused and editor cancelling, a tuning job's
trials chart, and a job's exported model deployed as a version. Screenshots of each page go to
``MLE_CONSOLE_SCREENSHOTS`` (docs/console/ when refreshing the docs; a temporary folder else)."""

from __future__ import annotations

import os
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.e2e.helpers import ServerProcess, _kill_leftovers, build_package, job_body, short_home, write_trainer

pytestmark = pytest.mark.e2e
sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = "/usr/bin/chromium"
JOBS = "/v1/projects/mlengine/jobs"
TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED")
SHOTS = Path(os.environ.get("MLE_CONSOLE_SCREENSHOTS") or tempfile.mkdtemp(prefix="mle-shots-"))

TRAINER = """
import argparse, time
parser = argparse.ArgumentParser()
parser.add_argument("--job-dir")
parser.add_argument("--ticks", type=int, default=0)
parser.add_argument("--x", type=float)
args, _ = parser.parse_known_args()
print("trainer started", flush=True)
for _ in range(args.ticks):
    print(f"tick {time.time():.3f}", flush=True)
    time.sleep(0.25)
if args.x is not None:
    from mlengine import hypertune

    hypertune.report("loss", (args.x - 0.3) ** 2, 1)
print("trainer done", flush=True)
"""


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed (scripts/setup.sh installs it)")
    srv = ServerProcess(short_home()).start()
    yield srv
    srv.stop()
    _kill_leftovers(srv.home)


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("console-trainer")
    write_trainer(root, TRAINER)
    return build_package(root)


@pytest.fixture(scope="module")
def tokens(server: ServerProcess) -> dict[str, str]:
    out = {}
    for role in ("viewer", "editor"):
        response = server.api("POST", "/v1/tokens", json={"name": f"ui-{role}", "role": role})
        assert response.status_code == 200, response.text
        out[role] = response.json()["token"]
    return out


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        args = ["--no-sandbox"] if os.geteuid() == 0 else []  # Chromium refuses root without it
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=args)
        yield launched
        launched.close()


def signed_in(browser: Any, server: ServerProcess, token: str) -> Any:
    """A page of a fresh browser context, signed in with ``token`` through the form."""
    context = browser.new_context(viewport={"width": 1200, "height": 760})
    page = context.new_page()
    page.goto(server.url + "/console/")
    assert "/console/signin" in page.url
    page.fill("input[name=token]", token)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r".*/console/projects/mlengine/jobs.*"))
    return page


def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"))
    assert (SHOTS / f"{name}.png").stat().st_size > 1000


def submit(server: ServerProcess, body: dict[str, Any], token: str) -> None:
    response = server.api("POST", JOBS, json=body, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text


def wait_state(server: ServerProcess, job_id: str, states: tuple[str, ...], timeout: float = 180) -> dict[str, Any]:
    return server.wait_state(job_id, states, timeout=timeout)


def test_sign_in_page_and_jobs_list(browser: Any, server: ServerProcess) -> None:
    context = browser.new_context(viewport={"width": 1200, "height": 760})
    page = context.new_page()
    page.goto(server.url + "/console/signin")
    shot(page, "signin")
    page.fill("input[name=token]", "mle_wrong")
    page.click("button[type=submit]")
    assert "not valid" in page.inner_text(".error")
    context.close()


def test_live_logs_viewer_refused_editor_cancels(browser: Any, server: ServerProcess, package: Path,
                                                 tokens: dict[str, str]) -> None:
    submit(server, job_body("ticking", package, ["--ticks", "600"]), tokens["editor"])
    wait_state(server, "ticking", ("RUNNING",))
    editor = signed_in(browser, server, tokens["editor"])
    editor.click("text=ticking")
    opened = time.time()
    # a line the trainer printed after the page was opened reaches it
    editor.wait_for_function(
        """(opened) => Array.from(document.querySelectorAll('#logs .log')).some(
               (line) => { const m = line.textContent.match(/tick (\\d+\\.\\d+)/); return m && +m[1] > opened; })""",
        arg=opened, timeout=30_000)
    shot(editor, "job")

    viewer = signed_in(browser, server, tokens["viewer"])
    viewer.goto(editor.url)
    viewer.wait_for_selector("#logs .log")
    assert viewer.locator("#cancel").count() == 0  # the button is not shown to a viewer...
    status = viewer.evaluate("""async () => {
        const csrf = document.querySelector('meta[name=csrf-token]').content;
        const r = await fetch(location.pathname + '/cancel', {method: 'POST', headers: {
            'Content-Type': 'application/x-www-form-urlencoded'}, body: 'csrf=' + encodeURIComponent(csrf)});
        return r.status; }""")
    assert status == 403  # ...and the request is refused
    assert server.job("ticking")["state"] == "RUNNING"

    # the same browser session from outside the page: no CSRF token, another origin, another Host
    cookies = {c["name"]: c["value"] for c in editor.context.cookies() if c["name"] == "mle_session"}
    csrf = editor.get_attribute("meta[name=csrf-token]", "content")
    path = "/console/projects/mlengine/jobs/ticking/cancel"
    with httpx.Client(base_url=server.url, cookies=cookies) as raw:
        assert raw.post(path, data={}, headers={"origin": server.url}).status_code == 403
        assert raw.post(path, data={"csrf": csrf}, headers={"origin": "http://evil.example"}).status_code == 403
        assert raw.post(path, data={"csrf": csrf}, headers={"origin": server.url.replace("127.0.0.1", "localhost")}
                        ).status_code == 403
        assert raw.post(path, data={"csrf": csrf}, headers={"host": "evil.example"}).status_code == 403
    assert server.job("ticking")["state"] == "RUNNING"

    editor.once("dialog", lambda dialog: dialog.accept())
    editor.click("#cancel")
    editor.wait_for_function("() => ['CANCELLING', 'CANCELLED'].includes("
                             "document.querySelector('#job-state').textContent)", timeout=30_000)
    assert wait_state(server, "ticking", TERMINAL)["state"] == "CANCELLED"
    editor.context.close()
    viewer.context.close()


def test_trials_chart(browser: Any, server: ServerProcess, package: Path, tokens: dict[str, str]) -> None:
    body = job_body("tuned", package, [])
    body["trainingInput"]["hyperparameters"] = {
        "goal": "MINIMIZE", "hyperparameterMetricTag": "loss", "maxTrials": 3, "maxParallelTrials": 2,
        "params": [{"parameterName": "x", "type": "DOUBLE", "minValue": 0, "maxValue": 1},
                   {"parameterName": "kind", "type": "CATEGORICAL", "categoricalValues": ["a", "b"]}]}
    submit(server, body, tokens["editor"])
    assert wait_state(server, "tuned", TERMINAL)["state"] == "SUCCEEDED"
    page = signed_in(browser, server, tokens["viewer"])
    page.goto(server.url + "/console/projects/mlengine/jobs/tuned")
    page.click("text=Trials and charts")
    page.wait_for_selector("#chart-objective .main-svg")
    page.wait_for_selector("#chart-parallel .parcoords")
    assert page.locator("#trials tbody tr").count() == 3
    objectives = [float(t) for t in page.locator("#trials tbody tr td:nth-child(3)").all_inner_texts()]
    assert objectives == sorted(objectives)  # best (lowest loss) first
    page.click("#trials th:nth-child(3)")
    page.click("#trials th:nth-child(3)")  # second click: descending
    descending = [float(t) for t in page.locator("#trials tbody tr td:nth-child(3)").all_inner_texts()]
    assert descending == sorted(objectives, reverse=True)
    shot(page, "trials")
    page.context.close()


def test_deploy_a_jobs_model_as_a_version(browser: Any, server: ServerProcess, package: Path,
                                          tokens: dict[str, str], tmp_path: Path) -> None:
    from tests.e2e.serving_helpers import write_sklearn_model

    job_dir = tmp_path / "job-dir"
    write_sklearn_model(job_dir / "model")  # what the trainer exported
    submit(server, job_body("exported", package, [], jobDir=str(job_dir)), tokens["editor"])
    assert wait_state(server, "exported", TERMINAL)["state"] == "SUCCEEDED"
    page = signed_in(browser, server, tokens["editor"])
    page.goto(server.url + "/console/projects/mlengine/jobs/exported")
    page.click("text=Deploy as a version")
    assert page.input_value("input[name=deploymentUri]") == str(job_dir / "model")
    assert page.input_value("select[name=framework]") == "SCIKIT_LEARN"
    page.fill("input[name=model]", "console_model")
    page.click("#deploy")
    page.wait_for_url(re.compile(r".*/models/console_model/versions/v1$"))
    assert page.inner_text("#version-state") in ("CREATING", "READY")
    version = "/v1/projects/mlengine/models/console_model/versions/v1"
    deadline = time.monotonic() + 240
    while server.api("GET", version).json().get("state") != "READY":
        assert time.monotonic() < deadline, server.api("GET", version).json()
        time.sleep(0.5)
    def predict(times: int) -> None:
        for _ in range(times):
            answer = server.api("POST", version + ":predict", json={"instances": [[1.0, 2.0, 3.0]]})
            assert answer.status_code == 200, answer.text

    predict(3)
    page.reload()
    assert re.search(r"\b3\b requests", page.inner_text("#traffic-totals"))  # the server's counters
    assert page.locator("#monitoring").count() == 1
    assert re.match(r"[1-9]\d* ready", page.inner_text("#replicas-now"))  # the replica the predictions started
    page.wait_for_timeout(5500)  # the page's first two polls of the counters...
    predict(5)
    page.wait_for_function("() => document.querySelector('#chart-rate').data?.[0]?.y?.some((v) => v > 0)",
                           timeout=20_000)  # ...then the rate chart shows the new predictions
    predict(2)
    page.wait_for_function("() => document.querySelector('#chart-rate').data[0].y.length >= 3", timeout=20_000)
    shot(page, "version")
    page.goto(server.url + "/console/projects/mlengine/models/console_model")
    assert page.locator("text=v1").count() >= 1
    page.goto(server.url + "/console/projects/mlengine/jobs")
    assert "exported" in page.locator("#jobs tbody td:first-child").all_inner_texts()
    shot(page, "jobs")
    page.context.close()


def test_tensorboard_of_a_job_shows_its_scalars(browser: Any, server: ServerProcess, package: Path,
                                                tokens: dict[str, str], tmp_path: Path) -> None:
    from tests.services.test_tensorboard import write_scalars

    job_dir = tmp_path / "boarded"
    write_scalars(job_dir / "train", tag="console_loss")  # what the trainer's summary writer left
    submit(server, job_body("boarded", package, [], jobDir=str(job_dir)), tokens["editor"])
    assert wait_state(server, "boarded", TERMINAL)["state"] == "SUCCEEDED"
    viewer = signed_in(browser, server, tokens["viewer"])
    viewer.goto(server.url + "/console/projects/mlengine/jobs/boarded")
    assert viewer.locator("#tensorboard").count() == 0  # viewers may not start services
    viewer.context.close()
    page = signed_in(browser, server, tokens["editor"])
    page.goto(server.url + "/console/projects/mlengine/jobs/boarded")
    with page.context.expect_page(timeout=60_000) as opened:
        page.click("#tensorboard")
    board = opened.value
    board.wait_for_url(re.compile(r".*/services/tb-boarded/proxy/[^?]*$"), timeout=60_000)  # token left the URL
    board.wait_for_selector("text=console_loss", timeout=90_000)
    shot(board, "tensorboard")
    names = [t["name"] for t in server.api("GET", "/v1/tokens").json()["tokens"]]
    assert any(n.startswith("console-session-") for n in names)  # the session's proxy token...
    page.click("text=Sign out")
    page.wait_for_url(re.compile(r".*/console/signin$"))
    names = [t["name"] for t in server.api("GET", "/v1/tokens").json()["tokens"]]
    assert not any(n.startswith("console-session-") for n in names)  # ...ends with the session
    page.context.close()
