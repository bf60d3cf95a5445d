"""Engine observers see every parsed request and its predictions, and never delay the answers."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mlengine.prediction.engine import Engine
from mlengine.prediction.frameworks._base import LoadOptions, PredictionError, Predictor, Prepared
from mlengine.prediction.observers import EngineObserver, Observation, ObserverHub


class Doubler(Predictor):
    framework = "CUSTOM"
    batchable = True

    @classmethod
    def load(cls, model_dir: Path, options: LoadOptions) -> Doubler:
        return cls()

    def prepare(self, instances: list[Any], kwargs: Mapping[str, Any]) -> Prepared:
        if any(not isinstance(i, (int, float)) for i in instances):
            raise PredictionError("numbers only")
        return Prepared(len(instances), instances)

    def predict(self, batch: Sequence[Prepared]) -> list[list[Any]]:
        return [[2 * x for x in prepared.data] for prepared in batch]


class Recorder(EngineObserver):
    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.seen: list[Observation] = []
        self.batches = 0
        self.closed = False
        self.thread: str | None = None

    def observe(self, batch: Sequence[Observation]) -> None:
        self.thread = threading.current_thread().name
        time.sleep(self.delay)
        self.seen.extend(batch)
        self.batches += 1

    def close(self) -> None:
        self.closed = True


class Broken(EngineObserver):
    def observe(self, batch: Sequence[Observation]) -> None:
        raise RuntimeError("observer bug")


def test_observer_sees_parsed_requests_predictions_and_errors() -> None:
    recorder = Recorder()
    hub = ObserverHub([Broken(), recorder])
    engine = Engine(Doubler(), observers=hub)
    bodies = [b'{"instances": [1, 2], "tag": "a"}', b"{nope", b'{"instances": ["x"]}', b'{"instances": [5]}']
    replies = engine.handle(bodies)
    assert [status for status, _ in replies] == [200, 400, 400, 200]
    hub.close()
    assert recorder.closed and recorder.thread == "mle-observers"
    assert len(recorder.seen) == 4
    first, bad_json, bad_instance, last = recorder.seen
    assert (first.status, first.instances, first.kwargs, first.predictions) == (200, [1, 2], {"tag": "a"}, [2, 4])
    assert first.response == replies[0][1] and json.loads(first.response) == {"predictions": [2, 4]}
    assert bad_json.instances is None and bad_json.predictions is None and bad_json.status == 400
    assert bad_instance.instances == ["x"] and bad_instance.predictions is None
    assert json.loads(bad_instance.response) == {"error": "numbers only"}
    assert last.predictions == [10]


def test_slow_observer_does_not_delay_responses() -> None:
    slow = Recorder(delay=0.5)
    hub = ObserverHub([slow])
    engine = Engine(Doubler(), observers=hub)
    started = time.monotonic()
    for i in range(20):
        assert engine.handle([json.dumps({"instances": [i]}).encode()])[0][0] == 200
    elapsed = time.monotonic() - started
    assert elapsed < 0.25, f"20 requests took {elapsed:.2f}s with a 0.5 s observer"
    hub.close(timeout=10)
    assert [o.predictions for o in slow.seen] == [[2 * i] for i in range(20)]
    assert slow.batches < 20  # what piled up while it was busy came as one batch


def test_full_queue_drops_instead_of_blocking() -> None:
    gate = threading.Event()

    class Stuck(EngineObserver):
        def observe(self, batch: Sequence[Observation]) -> None:
            gate.wait(10)

    hub = ObserverHub([Stuck()], capacity=3)
    engine = Engine(Doubler(), observers=hub)
    for _ in range(10):
        engine.handle([b'{"instances": [1]}'])
    assert hub.dropped >= 6
    gate.set()
    hub.close()


def test_no_observer_no_hub() -> None:
    engine = Engine(Doubler())
    assert engine.observers is None
    assert engine.handle([b'{"instances": [3]}']) == [(200, b'{"predictions":[6]}')]
