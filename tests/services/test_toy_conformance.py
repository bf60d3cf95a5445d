"""The service kind conformance suite (mlengine.testing.services), run on the toy kind."""

from __future__ import annotations

from typing import Any

import pytest
from tests.services.toy_kind import ToyKind

from mlengine.services import ServiceKind
from mlengine.testing.services import ServiceKindConformance


class TestToyKind(ServiceKindConformance):
    @pytest.fixture
    def service_kind_class(self) -> type[ServiceKind]:
        return ToyKind

    @pytest.fixture
    def service_spec(self) -> dict[str, Any]:
        return {"idleTimeoutSeconds": 600}

    @pytest.fixture
    def invalid_specs(self) -> list[tuple[dict[str, Any], str]]:
        return [({"bogus": 1}, "spec.bogus"), ({"crashAfterSeconds": "soon"}, "spec.crashAfterSeconds"),
                ({"unhealthy": 1}, "spec.unhealthy")]
