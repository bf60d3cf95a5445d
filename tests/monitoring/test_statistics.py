"""Statistics and distances on real Chicago taxi trips: quantile buckets see a threefold shift
of a long-tailed column that equal-width buckets miss, held-out rows raise nothing, each kind
of anomaly is reported on its own feature, and profiles merge exactly."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from mlengine.monitoring import distance, stats


def _replace(table: Any, name: str, column: Any) -> Any:
    return table.set_column(table.column_names.index(name), name, column)


def _findings(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["feature"]: f for f in result["findings"]}


def test_quantile_buckets_see_a_threefold_shift_that_equal_width_buckets_miss(split: tuple[Any, Any]) -> None:
    train, held = split
    shifted = _replace(held, "trip_miles", pc.multiply(held["trip_miles"], 3))
    quantile = stats.profile_table(train.select(["trip_miles"]))
    equal = stats.profile_table(train.select(["trip_miles"]), binning="equal_width")
    window = stats.profile_table(shifted.select(["trip_miles"]), reference=quantile)
    on_quantiles = distance.compare(quantile, window, {})
    on_equal = distance.compare(equal, stats.profile_table(shifted.select(["trip_miles"]), reference=equal), {})
    assert _findings(on_quantiles)["trip_miles"]["distance"] > 0.06
    assert _findings(on_quantiles)["trip_miles"]["alert"]
    assert _findings(on_equal)["trip_miles"]["distance"] < 0.01  # nearly everything in one bucket
    # Vertex's fixed 0.3 misses it even on quantile buckets
    fixed = distance.compare(quantile, stats.profile_table(shifted.select(["trip_miles"]), reference=quantile),
                             {"defaultThreshold": 0.3})
    finding = _findings(fixed)["trip_miles"]
    assert finding["thresholdMethod"] == "fixed" and finding["threshold"] == 0.3 and not finding["alert"]


def test_held_out_rows_raise_nothing_and_every_finding_says_why(split: tuple[Any, Any]) -> None:
    train, held = split
    base = stats.profile_table(train)
    result = distance.compare(base, stats.profile_table(held, reference=base), {})
    assert result["alerts"] == []
    for finding in result["findings"]:
        if finding["kind"] in ("numeric", "categorical") and finding["sampleSize"]:
            assert finding["distance"] <= finding["threshold"]
            assert finding["sampleSize"] > 0 and finding["thresholdMethod"] == "bootstrap"


def test_each_change_is_its_own_anomaly_and_untouched_features_stay_quiet(split: tuple[Any, Any]) -> None:
    train, held = split
    base = stats.profile_table(train)
    payment = held["payment_type"].to_pylist()
    payment = ["Bitcoin" if i % 3 == 0 else p for i, p in enumerate(payment)]
    window = _replace(held, "payment_type", pa.array(payment))
    window = _replace(window, "trip_miles", pc.multiply(window["trip_miles"], 3))
    window = window.drop_columns(["trip_seconds"])
    result = distance.compare(base, stats.profile_table(window, reference=base), {})
    found = _findings(result)
    assert sorted(result["alerts"]) == ["payment_type", "trip_miles", "trip_seconds"]
    assert [a["type"] for a in found["payment_type"]["anomalies"]] == ["NEW_CATEGORY"]
    assert found["payment_type"]["anomalies"][0]["values"] == ["Bitcoin"]
    assert [a["type"] for a in found["trip_seconds"]["anomalies"]] == ["MISSING_FEATURE"]
    assert found["trip_miles"]["exceeded"] and not found["trip_miles"]["anomalies"]


def test_a_window_with_few_rows_alerts_on_nothing_and_says_why(split: tuple[Any, Any]) -> None:
    train, held = split
    base = stats.profile_table(train)
    few = held.slice(0, 20)
    few = _replace(few, "trip_miles", pc.multiply(few["trip_miles"], 3))
    result = distance.compare(base, stats.profile_table(few, reference=base), {"minRows": 50})
    assert result["alerts"] == [] and "fewer than minRows 50" in result["note"]
    assert _findings(result)["trip_miles"]["sampleSize"] == 20


def test_new_feature_type_change_and_missing_rate_jump(split: tuple[Any, Any]) -> None:
    train, held = split
    base = stats.profile_table(train.select(["fare", "company", "trip_miles"]))
    window = pa.table({
        "fare": pa.array(["high"] * held.num_rows),
        "company": held["company"],
        "trip_miles": pa.array([None if i % 2 else v for i, v in enumerate(held["trip_miles"].to_pylist())],
                               pa.float64()),
        "coupon": pa.array([1.0] * held.num_rows),
    })
    found = _findings(distance.compare(base, stats.profile_table(window, reference=base), {}))
    assert [a["type"] for a in found["fare"]["anomalies"]] == ["TYPE_CHANGE"]
    assert [a["type"] for a in found["coupon"]["anomalies"]] == ["NEW_FEATURE"]
    assert "MISSING_RATE_JUMP" in [a["type"] for a in found["trip_miles"]["anomalies"]]
    assert not found["company"]["alert"]


def test_profiles_merge_exactly(split: tuple[Any, Any]) -> None:
    train, held = split
    base = stats.profile_table(train)
    whole = stats.profile_table(held, reference=base)
    halves = [stats.profile_table(held.slice(0, 400), reference=base),
              stats.profile_table(held.slice(400), reference=base)]
    merged = stats.merge(halves)
    assert merged["rows"] == whole["rows"] == 1000
    for name in ("trip_miles", "fare"):
        a, b = merged["features"][name], whole["features"][name]
        assert a["histogram"]["counts"] == b["histogram"]["counts"]
        assert (a["count"], a["missing"], a["min"], a["max"]) == (b["count"], b["missing"], b["min"], b["max"])
        assert a["mean"] == pytest.approx(b["mean"]) and a["std"] == pytest.approx(b["std"])
    assert merged["features"]["payment_type"]["counts"] == whole["features"]["payment_type"]["counts"]


def test_strings_that_look_like_timestamps_are_text_not_categories() -> None:
    table = pa.table({"when": [f"2011-01-{d:02d} 10:{m:02d}:00 UTC" for d in range(1, 29) for m in range(10)]})
    profile = stats.profile_table(table)
    assert profile["features"]["when"]["kind"] == "text"
    window = stats.profile_table(pa.table({"when": ["2020-01-01 00:00:00 UTC"] * 200}), reference=profile)
    assert distance.compare(profile, window, {})["alerts"] == []
