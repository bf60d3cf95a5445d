"""Shared data of the monitoring tests: a slice of the Chicago taxi trips, split at random."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

DATA = Path(__file__).parent / "data" / "chicago_taxi.csv"


@pytest.fixture(scope="session")
def chicago() -> Any:
    import pyarrow.csv as pc

    return pc.read_csv(DATA)


@pytest.fixture(scope="session")
def split(chicago: Any) -> tuple[Any, Any]:
    """(training rows, 1,000 held-out rows), at random with a fixed seed."""
    import numpy as np
    import pyarrow as pa

    order = np.random.default_rng(7).permutation(chicago.num_rows)
    return chicago.take(pa.array(order[1000:])), chicago.take(pa.array(order[:1000]))
