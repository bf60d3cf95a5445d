"""The notebook service kind: the conformance suite (a real sandboxed JupyterLab through the
proxy), its git saving and its view of idleness."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mlengine.services import ServiceKind
from mlengine.services.kinds.notebook import NotebookKind
from mlengine.services.kinds.notebook_git import commit_file, init_repository, parse_log
from mlengine.testing.services import ServiceKindConformance

pytest.importorskip("jupyterlab")


class TestNotebookKind(ServiceKindConformance):
    @pytest.fixture
    def service_kind_class(self) -> type[ServiceKind]:
        return NotebookKind

    @pytest.fixture
    def service_spec(self) -> dict[str, Any]:
        return {"idleTimeoutSeconds": 600}

    @pytest.fixture
    def invalid_specs(self) -> list[tuple[dict[str, Any], str]]:
        return [({"bogus": 1}, "spec.bogus"), ({"idleTimeoutSeconds": "soon"}, "spec.idleTimeoutSeconds"),
                ({"idleTimeoutSeconds": -1}, "spec.idleTimeoutSeconds"), ({"gitRemote": "ftp://x"}, "spec.gitRemote"),
                ({"gitRemote": 3}, "spec.gitRemote"), ({"owner": 5}, "spec.owner")]


def _notebook(cells: list[tuple[str, str]]) -> dict[str, Any]:
    return {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [
        {"cell_type": "code", "id": f"c{i}", "source": src, "metadata": {}, "execution_count": i + 1,
         "outputs": [{"output_type": "stream", "name": "stdout", "text": out}]}
        for i, (src, out) in enumerate(cells)]}


def test_saves_are_committed_without_outputs_and_pushed(tmp_path: Path) -> None:
    root, remote = tmp_path / "disk", tmp_path / "remote.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(remote)], check=True)
    init_repository(str(root), str(remote))
    nb = root / "lab.ipynb"
    nb.write_text(json.dumps(_notebook([("print('secret-output-source')", "THE-OUTPUT\n")])))
    assert commit_file(root, nb)
    assert commit_file(root, nb) is None, "an unchanged save makes no commit"
    committed = subprocess.run(["git", "-C", str(root), "show", "HEAD:lab.ipynb"], capture_output=True,
                               text=True, check=True).stdout
    assert "secret-output-source" in committed and "THE-OUTPUT" not in committed
    assert "THE-OUTPUT" in nb.read_text(), "the file on disk keeps its outputs"
    log = subprocess.run(["git", "-C", str(root), "log", "--format=%H%x1f%an%x1f%aI%x1f%s"], capture_output=True,
                         text=True, check=True).stdout
    messages = [c["message"] for c in parse_log(log)]
    assert messages == ["Save lab.ipynb", "Notebook instance created"]
    subprocess.run(["git", "-C", str(root), "push", "-q", "origin", "HEAD:refs/heads/main"], check=True)
    pushed = subprocess.run(["git", "-C", str(remote), "log", "--format=%s", "main"], capture_output=True,
                            text=True, check=True).stdout
    assert "Save lab.ipynb" in pushed


def test_kernels_get_the_owner_token_not_the_service(tmp_path: Path) -> None:
    from mlengine.config import load_settings
    from mlengine.services import ServiceContext, ServiceInstance

    kind = NotebookKind(ServiceContext(load_settings(home=tmp_path / "home")))
    directory = tmp_path / "svc"
    directory.mkdir()
    (directory / "owner_token").write_text("mle_owner_secret")
    (directory / "api_url").write_text("http://127.0.0.1:1234")
    instance = ServiceInstance(project="p", name="nb", spec=kind.validate({"owner": "user:ann"}), host="127.0.0.1",
                               port=2345, url_prefix="/v1/projects/p/services/nb/proxy/", directory=directory)
    command = kind.command(instance)
    assert not any("mle_owner_secret" in a for a in command.argv)
    assert not any(a.startswith("MLE_") for a in command.argv), "no mlengine setting reaches Jupyter itself"
    spec = json.loads((directory / "jupyter/share/kernels/python3/kernel.json").read_text())
    assert spec["env"]["MLE_TOKEN"] == "mle_owner_secret"
    assert spec["env"]["MLE_API_URL"] == "http://127.0.0.1:1234"
    assert spec["argv"][0] == sys.executable
