"""Alerts of a monitoring run: the server log, the run's record, and an optional webhook.

The webhook gets one JSON POST per run that alerts. The URL was checked when it was configured
(:func:`mlengine.monitoring.spec.check_webhook`) and is checked again before each post (a name
may resolve elsewhere now); redirects are not followed; each attempt has a timeout and the
attempts are bounded, with a short backoff. The outcome goes into the run's record.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from mlengine.config import Settings
from mlengine.errors import MLEngineError

log = logging.getLogger("mlengine.monitoring")
ATTEMPTS = 3
TIMEOUT = 5.0


def payload(version: str, record: Mapping[str, Any]) -> dict[str, Any]:
    def pick(section: str) -> list[dict[str, Any]]:
        found = (record.get(section) or {}).get("findings") or []
        return [{k: f.get(k) for k in ("feature", "metric", "distance", "threshold", "sampleSize", "anomalies")}
                for f in found if f.get("alert")]

    return {"version": version, "run": record.get("name"), "window": record.get("window"),
            "alerts": record.get("alerts", []), "skew": pick("skew"), "drift": pick("drift")}


def send_webhook(url: str, body: Mapping[str, Any], settings: Settings | None, *, attempts: int = ATTEMPTS,
                 timeout: float = TIMEOUT, backoff: float = 1.0) -> dict[str, Any]:
    """POST ``body``; ``{"status": code}`` or ``{"error": message}`` after the last attempt."""
    import httpx

    from mlengine.monitoring.spec import check_webhook

    try:
        check_webhook(url, settings, "monitoringConfig.alertWebhook")
    except MLEngineError as err:
        return {"error": err.message, "attempts": 0}
    error = ""
    for attempt in range(1, attempts + 1):
        try:
            with httpx.Client(follow_redirects=False, timeout=timeout) as client:
                response = client.post(url, json=body)
            if response.status_code < 300:
                return {"status": response.status_code, "attempts": attempt}
            error = f"HTTP {response.status_code}"
            if response.status_code < 500 and response.status_code != 429:
                break  # the receiver refuses it: retrying will not help
        except httpx.HTTPError as err:
            error = f"{type(err).__name__}: {err}"
        if attempt < attempts:
            time.sleep(backoff * attempt)
    log.warning("monitoring alert webhook %s failed: %s", url, error)
    return {"error": error, "attempts": attempt}
