"""A monitoring run: the serving window's profile against the baseline (skew) and against the
previous run's window (drift), stored as one JSON record per run under the version.

A run's record holds its window (``startTime``, ``endTime``), its row counts (requests,
instances, instances that could not be read as features), the window's profile (mergeable:
the console sums runs into days), and for skew and drift every feature's distance, threshold,
sample size and anomalies, with the alerts. Records are written atomically and listed newest
first with the same page tokens as every list.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mlengine.core.timeutil import rfc3339
from mlengine.errors import invalid, not_found
from mlengine.monitoring import distance, logs, stats


def runs_dir(version_dir: Path) -> Path:
    return version_dir / "monitoring" / "runs"


# The serving window -----------------------------------------------------------------------------
def _cell(value: Any) -> Any:
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return value


def instances_table(instances: Sequence[Any], names: Sequence[str]) -> tuple[Any, int]:
    """The instances as a table (objects by key; lists by position onto ``names``) and how many
    could not be read as features."""
    import pyarrow as pa

    columns: dict[str, list[Any]] = {}
    rows = skipped = 0
    for instance in instances:
        if isinstance(instance, dict):
            row = instance
        elif isinstance(instance, list) and names and len(instance) == len(names):
            row = dict(zip(names, instance, strict=True))
        else:
            skipped += 1
            continue
        for key in row:
            if key not in columns:
                columns[key] = [None] * rows
        for key, values in columns.items():
            values.append(_cell(row.get(key)))
        rows += 1
    arrays = {}
    for key, values in columns.items():
        present = [v for v in values if v is not None]
        if present and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
            arrays[key] = pa.array([float(v) if v is not None else None for v in values], pa.float64())
        else:
            arrays[key] = pa.array([None if v is None else str(v) for v in values], pa.string())
    return pa.table(arrays) if arrays else pa.table({}), skipped


def window_instances(version_dir: Path, start: float, end: float) -> tuple[list[Any], int]:
    """The instances of the logged calls in ``[start, end)`` and the number of calls. Failed calls
    count too: what clients send is the serving distribution, even when the model refused it
    (a dropped column fails every prediction)."""
    import orjson

    table = logs.read_logs(version_dir, start, end, columns=("raw_data",))
    instances: list[Any] = []
    calls = 0
    for raw in table["raw_data"].to_pylist():
        if raw is None:
            continue
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue
        if isinstance(body, dict) and isinstance(body.get("instances"), list):
            calls += 1
            instances.extend(body["instances"])
    return instances, calls


# The analysis -------------------------------------------------------------------------------------
def analyze(version_dir: Path, baseline: Mapping[str, Any] | None, config: Mapping[str, Any], start: float,
            end: float, previous: Mapping[str, Any] | None, features: Sequence[str] = ()) -> dict[str, Any]:
    """The record of a run over ``[start, end)`` (not stored)."""
    instances, calls = window_instances(version_dir, start, end)
    names = list(features) or list((baseline or {}).get("features") or [])
    table, skipped = instances_table(instances, names)
    reference = (baseline or {}).get("profile")
    # without a baseline, windows are bucketed like the previous one so that drift compares
    profile = stats.profile_table(table, reference=reference or (previous or {}).get("profile"))
    record: dict[str, Any] = {
        "window": {"startTime": rfc3339_epoch(start), "endTime": rfc3339_epoch(end), "start": start, "end": end},
        "requests": calls, "rows": table.num_rows, "unreadInstances": skipped, "profile": profile,
    }
    if reference is not None:
        record["skew"] = distance.compare(reference, profile, config, names or None)
    else:
        record["skew"] = {"note": "no training baseline: " + str((baseline or {}).get("error") or "none yet")}
    if previous is not None and previous.get("profile", {}).get("rows"):
        prev_profile = previous["profile"]
        # drift: the previous window is the reference (its own bucket counts, the baseline's edges)
        record["drift"] = distance.compare(prev_profile, profile, config, None)
        record["drift"]["previousRun"] = previous.get("name")
        if prev_profile["rows"] < int(config.get("minRows", distance.MIN_ROWS)):
            record["drift"]["alerts"] = []
            record["drift"]["note"] = "the previous window has too few rows to judge drift"
            for finding in record["drift"]["findings"]:
                finding["alert"] = False
    else:
        record["drift"] = {"note": "no previous window with rows"}
    record["alerts"] = sorted({*record["skew"].get("alerts", []), *record["drift"].get("alerts", [])})
    return record


def rfc3339_epoch(epoch: float) -> str:
    import datetime as dt

    return rfc3339(dt.datetime.fromtimestamp(epoch, dt.timezone.utc)) or ""


# Storage ----------------------------------------------------------------------------------------
def save(version_dir: Path, record: dict[str, Any]) -> dict[str, Any]:
    folder = runs_dir(version_dir)
    folder.mkdir(parents=True, exist_ok=True)
    stamp = int(record["window"]["end"] * 1000)  # ids sort by the window's end; a name starts with a letter
    while (folder / f"r{stamp:015d}.json").exists():
        stamp += 1
    run_id = f"r{stamp:015d}"
    record["name"] = run_id
    record.setdefault("createTime", rfc3339_epoch(time.time()))
    temporary = folder / f".{run_id}.tmp"
    temporary.write_text(json.dumps(record))
    os.replace(temporary, folder / f"{run_id}.json")
    return record


def _is_run_id(text: str) -> bool:
    return len(text) == 16 and text[0] == "r" and text[1:].isdigit()


def run_ids(version_dir: Path) -> list[str]:
    folder = runs_dir(version_dir)
    if not folder.is_dir():
        return []
    return sorted((p.stem for p in folder.glob("r*.json") if _is_run_id(p.stem)), reverse=True)


def load(version_dir: Path, run_id: str) -> dict[str, Any]:
    if not _is_run_id(run_id):
        raise invalid("run", f"{run_id!r} is not a run id")
    try:
        return dict(json.loads((runs_dir(version_dir) / f"{run_id}.json").read_text()))
    except (OSError, ValueError):
        raise not_found(f"monitoring run {run_id}") from None


def latest(version_dir: Path) -> dict[str, Any] | None:
    ids = run_ids(version_dir)
    return load(version_dir, ids[0]) if ids else None


def page(version_dir: Path, page_size: int | None, page_token: str | None) -> tuple[list[dict[str, Any]], str | None]:
    """Runs newest first; ``page_token`` is the opaque token of the previous page."""
    size = page_size or 20
    if size < 1 or size > 1000:
        raise invalid("pageSize", "must be from 1 to 1000")
    ids = run_ids(version_dir)
    if page_token:
        try:
            after = base64.urlsafe_b64decode(page_token.encode()).decode()
        except (ValueError, UnicodeDecodeError):
            raise invalid("pageToken", "is not a token this server gave") from None
        if not _is_run_id(after):
            raise invalid("pageToken", "is not a token this server gave")
        ids = [i for i in ids if i < after]
    chosen = ids[:size]
    token = base64.urlsafe_b64encode(chosen[-1].encode()).decode() if len(ids) > size else None
    return [load(version_dir, i) for i in chosen], token


def render(record: Mapping[str, Any], parent: str, *, full: bool = False) -> dict[str, Any]:
    """A run as the API shows it (without the window's histograms unless ``full``)."""
    out = {k: v for k, v in record.items() if k != "profile" or full}
    out["name"] = f"{parent}/monitoringRuns/{record['name']}"
    return out


def save_existing(version_dir: Path, record: dict[str, Any]) -> None:
    """Rewrite a stored run (the webhook's outcome added)."""
    folder = runs_dir(version_dir)
    temporary = folder / f".{record['name']}.tmp"
    temporary.write_text(json.dumps(record))
    os.replace(temporary, folder / f"{record['name']}.json")
