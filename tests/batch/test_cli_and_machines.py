"""`mle jobs submit prediction` takes gcloud's spellings of the formats (any case, - or _) and
sends the API's; local paths are refused when the Ray cluster spans several machines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from tests.inprocess import inprocess_server, project, server  # noqa: F401

from mlengine.batch.kind import multi_machine
from mlengine.cli.main import cli
from mlengine.testing.inprocess import InProcessServer


@pytest.mark.parametrize(("given", "output", "sent", "sent_output"), [
    ("tf-record", "Parquet", "TF_RECORD", "PARQUET"),
    ("TF_RECORD_GZIP", "csv", "TF_RECORD_GZIP", "CSV"),
    ("Tf_Record-Gzip", None, "TF_RECORD_GZIP", None),
    ("json", "JSON", "JSON", "JSON"),
])
def test_formats_in_gcloud_spellings(server: InProcessServer, project: str, tmp_path: Path,  # noqa: F811
                                     given: str, output: str | None, sent: str, sent_output: str | None) -> None:
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("not empty")  # the server refuses: no job runs
    args = ["jobs", "submit", "prediction", "spell", "--model-dir", str(tmp_path), "--input-paths",
            str(tmp_path / "taken" / "x"), "--output-path", str(tmp_path / "taken"), "--data-format", given]
    if output:
        args += ["--output-data-format", output]
    server.clear_requests()
    result = CliRunner().invoke(cli, args, env={**server.client_env(), "MLE_PROJECT": project}, prog_name="mle")
    assert result.exit_code != 0  # the body was sent, then refused by the server
    posted = [r for r in server.requests if r.method == "POST" and r.url.path.endswith("/jobs")]
    assert posted, result.output
    body = json.loads(posted[-1].content)["predictionInput"]
    assert body["dataFormat"] == sent and body.get("outputDataFormat") == sent_output


def test_a_format_gcloud_does_not_know_is_refused_by_the_cli(server: InProcessServer,  # noqa: F811
                                                             tmp_path: Path) -> None:
    server.clear_requests()
    result = CliRunner().invoke(cli, ["jobs", "submit", "prediction", "spell", "--model-dir", str(tmp_path),
                                      "--input-paths", "x", "--output-path", str(tmp_path / "o"),
                                      "--data-format", "xml"], env=server.client_env(), prog_name="mle")
    assert result.exit_code == 2 and "'xml' is not one of" in result.output
    assert "tf-record-gzip" in result.output
    assert not server.requests


def test_machines_of_a_ray_cluster() -> None:
    assert multi_machine(["127.0.0.2", "127.0.0.3"]) == ["this machine"]  # the suite's two-node cluster
    assert multi_machine(["10.0.0.10", "10.0.0.10"]) == ["10.0.0.10"]
    assert multi_machine(["10.0.0.10", "10.0.0.11", "127.0.0.1"]) == ["10.0.0.10", "10.0.0.11", "this machine"]


def test_local_paths_are_refused_on_a_ray_cluster_of_several_machines(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """(No cluster of several machines in the suite: the cluster's answer is the one stand-in.)"""
    from mlengine.batch import kind as batch_kind
    from mlengine.config import load_settings
    from mlengine.errors import MLEngineError
    from mlengine.jobs.kinds import KindContext

    settings = load_settings(home=tmp_path / "home", executor="ray", sandbox="off")
    bp = batch_kind.BatchPredictionKind(KindContext(settings, None, None, lambda: None))  # type: ignore[arg-type]
    (tmp_path / "in.json").write_text("[1]\n")
    pi = {"inputPaths": [str(tmp_path / "in.json")], "outputPath": str(tmp_path / "out")}
    monkeypatch.setattr(batch_kind, "ray_machines", lambda: ["10.0.0.10", "10.0.0.11"])
    with pytest.raises(MLEngineError) as info:
        bp._check_paths(pi)
    assert info.value.message.startswith("Field: predictionInput.inputPaths[0] ")
    assert "spans 2 machines" in info.value.message and "s3://" in info.value.message
    monkeypatch.setattr(batch_kind, "ray_machines", lambda: ["this machine"])
    bp._check_paths(pi)  # one machine: local paths are fine
