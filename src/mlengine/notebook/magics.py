"""``%load_ext mlengine``: ``%%sql`` (DuckDB) and ``%mle`` (any ``mle`` command) in IPython.

- ``%%sql [VARIABLE]``: the cell is DuckDB SQL over CSV and Parquet files (``read_csv_auto``,
  ``'data/*.parquet'``), buckets (``gs://``, ``s3://``... through fsspec, when its package is
  installed) and the notebook's pandas DataFrames by name; the result is a DataFrame, shown,
  and stored in ``VARIABLE`` when one is given. One DuckDB connection per kernel.
- ``%mle ARGS``: runs ``mle ARGS`` (the kernel's ``MLE_API_URL``/``MLE_TOKEN``: the server and
  the notebook owner's token) with its output in the cell; an exit status other than 0 raises,
  so a notebook run top to bottom stops there. In a notebook instance (``MLE_NOTEBOOK`` set),
  ``jobs submit`` gets the label ``mlengine-notebook=<instance>``: the instance does not stop
  for idleness while such a job runs.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from typing import Any

#: Label of jobs a notebook instance submitted (:data:`mlengine.services.kinds.notebook.JOB_LABEL`).
JOB_LABEL = "mlengine-notebook"
_SCHEME = re.compile(r"\b([a-z][a-z0-9+.-]*)://")
_LOCAL_SCHEMES = frozenset({"file", "http", "https"})


def labelled(args: list[str], notebook: str | None) -> list[str]:
    """``args`` of ``jobs submit ...`` with the notebook's job label added (kept as given otherwise)."""
    if not notebook or args[:2] != ["jobs", "submit"]:
        return args
    args = list(args)
    label = f"{JOB_LABEL}={notebook}"
    user_args = args.index("--") if "--" in args else len(args)
    for i, arg in enumerate(args[:user_args]):
        if arg == "--labels" and i + 1 < user_args:
            args[i + 1] = f"{args[i + 1]},{label}"
            return args
        if arg.startswith("--labels="):
            args[i] = f"{arg},{label}"
            return args
    args.insert(user_args, f"--labels={label}")
    return args


def run_mle(line: str) -> int:
    """Run ``mle`` with ``line``'s arguments, streaming its output; its exit status."""
    args = labelled(shlex.split(line), os.environ.get("MLE_NOTEBOOK"))
    process = subprocess.Popen([sys.executable, "-m", "mlengine.cli.main", *args], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, bufsize=1)
    for text in process.stdout or ():
        print(text, end="", flush=True)
    return process.wait()


class SQL:
    """The kernel's DuckDB connection, with the filesystems its queries name registered."""

    def __init__(self) -> None:
        import duckdb

        self.connection = duckdb.connect()
        self._registered: set[str] = set()

    def _filesystems(self, query: str) -> None:
        for scheme in set(_SCHEME.findall(query)) - _LOCAL_SCHEMES - self._registered:
            import fsspec

            try:
                self.connection.register_filesystem(fsspec.filesystem(scheme))
            except (ImportError, ValueError) as exc:
                raise RuntimeError(f"%%sql: cannot read {scheme}:// here ({exc})") from None
            self._registered.add(scheme)

    def query(self, query: str, namespace: dict[str, Any]) -> Any:
        self._filesystems(query)
        words = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", query))
        for name in words:
            value = namespace.get(name)
            if type(value).__name__ == "DataFrame" and type(value).__module__.startswith("pandas"):
                self.connection.register(name, value)
        return self.connection.sql(query).df()


def load_ipython_extension(ipython: Any) -> None:
    from IPython.core.magic import Magics, cell_magic, line_magic, magics_class

    @magics_class
    class MLEngineMagics(Magics):
        _sql: SQL | None = None

        @cell_magic
        def sql(self, line: str, cell: str) -> Any:
            """%%sql [VARIABLE]: DuckDB over files, buckets and DataFrames; the result as a DataFrame."""
            target = line.strip()
            if target and not target.isidentifier():
                raise ValueError(f"%%sql {target}: the result goes to a Python variable name")
            if self._sql is None:
                self._sql = SQL()
            namespace: dict[str, Any] = self.shell.user_ns if self.shell is not None else {}
            frame = self._sql.query(cell, namespace)
            if target:
                namespace[target] = frame
            return frame

        @line_magic
        def mle(self, line: str) -> None:
            """%mle ARGS: run `mle ARGS` against the server (e.g. %mle jobs list)."""
            status = run_mle(line)
            if status != 0:
                raise RuntimeError(f"`mle {line}` exited with status {status}")

    ipython.register_magics(MLEngineMagics)
