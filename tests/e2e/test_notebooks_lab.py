"""The seeds' lab as a notebook (samples/taxifare/notebooks/taxifare_lab.ipynb), executed top to
bottom by nbclient against a real server: SQL and a plot, the trainer written by %%writefile,
python -m, mle local train, a submitted job, TensorBoard, a deployed version and a prediction
through googleapiclient. Any error in any cell fails the test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.e2e.helpers import REPO, ServerProcess, short_home

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
pytest.importorskip("nbclient")
pytest.importorskip("tensorflow")

NOTEBOOK = REPO / "samples" / "taxifare" / "notebooks" / "taxifare_lab.ipynb"


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    srv = ServerProcess(short_home())
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def test_the_lab_notebook_runs_top_to_bottom(server: ServerProcess, tmp_path: Path) -> None:
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOK, as_version=4)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MLE_")},
           "MLE_API_URL": server.url, "MLE_TOKEN": server.token, "MLE_HOME": str(tmp_path / "client-home"),
           "LAB_WORK": str(tmp_path / "work"), "LAB_JOB_DIR": str(tmp_path / "jobs"), "LAB_EPOCHS": "1",
           "LAB_ROWS": "1500", "TF_CPP_MIN_LOG_LEVEL": "2"}
    client = NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute(env=env)  # raises CellExecutionError naming the cell on any error

    text = "\n".join(str(o.get("text", "")) for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "Exported SavedModel" in text and "SUCCEEDED" in text
    assert "'predictions'" in text
    assert (tmp_path / "work" / "trainer" / "model.py").exists()
    jobs = server.api("GET", "/v1/projects/mlengine/jobs").json().get("jobs", [])
    assert [j["state"] for j in jobs if j["jobId"].startswith("taxifare_lab_")] == ["SUCCEEDED"]
