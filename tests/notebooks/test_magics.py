"""``%load_ext mlengine`` in a real IPython shell: ``%%sql`` over files and DataFrames, ``%mle``
labels the jobs a notebook submits and fails the cell on a failed command."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlengine.notebook.magics import JOB_LABEL, labelled

pytest.importorskip("duckdb")
pytest.importorskip("IPython")


@pytest.fixture(scope="module")
def shell():  # type: ignore[no-untyped-def]
    from IPython.testing.globalipapp import start_ipython

    ip = start_ipython()
    ip.run_line_magic("load_ext", "mlengine")
    return ip


def test_sql_reads_csv_and_parquet_and_dataframes(shell, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import pandas as pd

    csv = tmp_path / "rides.csv"
    csv.write_text("fare,passengers\n10.5,1\n20.0,2\n7.5,1\n")
    pd.DataFrame({"passengers": [1, 2], "kind": ["solo", "pair"]}).to_parquet(tmp_path / "kinds.parquet")
    shell.user_ns["extra"] = pd.DataFrame({"fare": [100.0], "passengers": [9]})
    frame = shell.run_cell_magic("sql", "result", f"""
        SELECT k.kind, count(*) AS n, sum(r.fare) AS total
        FROM (SELECT * FROM read_csv_auto('{csv}') UNION ALL SELECT * FROM extra) r
        JOIN '{tmp_path / "kinds.parquet"}' k USING (passengers)
        GROUP BY k.kind ORDER BY k.kind""")
    assert isinstance(frame, pd.DataFrame)
    assert frame.to_dict("records") == [{"kind": "pair", "n": 1, "total": 20.0},
                                        {"kind": "solo", "n": 2, "total": 18.0}]
    assert shell.user_ns["result"] is frame


def test_sql_refuses_a_bad_target(shell) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="variable name"):
        shell.run_cell_magic("sql", "not a name", "SELECT 1")


def test_mle_runs_the_cli_and_raises_on_failure(shell, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    shell.run_line_magic("mle", "notebooks --help")
    assert "JupyterLab notebook instances" in capsys.readouterr().out
    with pytest.raises(RuntimeError, match="exited with status 2"):
        shell.run_line_magic("mle", "no-such-command")


def test_jobs_submitted_from_a_notebook_carry_its_label() -> None:
    submit = ["jobs", "submit", "training", "j1", "--module-name", "trainer.task", "--", "--epochs", "1"]
    assert labelled(submit, "lab") == [*submit[:6], f"--labels={JOB_LABEL}=lab", *submit[6:]]
    assert labelled(["jobs", "submit", "training", "j", "--labels", "a=b"], "lab")[-1] == f"a=b,{JOB_LABEL}=lab"
    assert labelled(["jobs", "submit", "training", "j", "--labels=a=b"], "lab")[-1] == f"--labels=a=b,{JOB_LABEL}=lab"
    assert labelled(["jobs", "list"], "lab") == ["jobs", "list"]
    assert labelled(submit, None) == submit
