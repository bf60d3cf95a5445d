"""The request pipeline every prediction goes through, in a replica and in ``mle local predict``.

``Engine(predictor).handle([body, ...])`` takes raw request bodies (bytes, JSON) and returns one
``(status, response body)`` per request:

1. parse each body (JSON only) and check its shape: an object with a non-empty ``instances``
   list of at most ``max_instances`` (``MLE_PREDICT_MAX_INSTANCES``); the other fields are the
   request's ``kwargs``;
2. ``predictor.prepare`` each request (per-request validation: one bad request never spoils the
   others);
3. merge consecutive requests with the same key into micro-batches of at most ``max_batch``
   instances (a bigger request is a batch of its own) and call ``predictor.predict`` once per
   batch; when a merged batch fails, its requests are retried one by one so that the error is
   reported on the request that caused it;
4. serialize ``{"predictions": [...]}`` or the flat error ``{"error": "message"}``.

The same bytes in give the same bytes out whichever way they arrive, so ``mle local predict``
and the server agree exactly (for a request predicted alone).

Observers (:mod:`mlengine.prediction.observers`) see every parsed request and its predictions
through an :class:`~mlengine.prediction.observers.ObserverHub`: without one, :meth:`Engine.handle`
does no extra work; with one, it hands each answered request to the hub's queue and the
observers run on the hub's thread.
"""

from __future__ import annotations

import logging
import sys
import time
import traceback
from collections.abc import Sequence
from typing import Any

from mlengine.prediction import jsonio
from mlengine.prediction.frameworks._base import PredictionError, Predictor, Prepared
from mlengine.prediction.observers import Observation, ObserverHub

log = logging.getLogger("mlengine.replica")
Reply = tuple[int, bytes]


#: Most instances one request may hold unless configured (``MLE_PREDICT_MAX_INSTANCES``).
MAX_INSTANCES = 10_000


def parse_request(body: bytes, max_instances: int = MAX_INSTANCES) -> tuple[list[Any], dict[str, Any]]:
    """``(instances, kwargs)`` of a request body; :class:`PredictionError` when malformed or
    holding more than ``max_instances`` instances."""
    if not body.strip():
        raise PredictionError('The request body is empty; expected JSON like {"instances": [...]}.')
    try:
        request = jsonio.loads(body)
    except jsonio.JSONError as err:
        raise PredictionError(f"The request body is not valid JSON: {err}") from None
    if not isinstance(request, dict):
        raise PredictionError(
            f'The request body must be a JSON object like {{"instances": [...]}}, not a {_json_type(request)}.'
        )
    if "instances" not in request:
        hint = " (the \"inputs\" form is not supported)" if "inputs" in request else ""
        raise PredictionError(f'The request body has no "instances" field{hint}; expected {{"instances": [...]}}.')
    instances = request.pop("instances")
    if not isinstance(instances, list):
        raise PredictionError(f'"instances" must be a list, not a {_json_type(instances)}.')
    if not instances:
        raise PredictionError('"instances" is empty; send at least one instance.')
    if len(instances) > max_instances:
        raise PredictionError(f'"instances" holds {len(instances)} instances; a request may hold at most '
                              f"{max_instances} (MLE_PREDICT_MAX_INSTANCES): split it into several requests.")
    return instances, request


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "list", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _unexpected(err: BaseException) -> PredictionError:
    if isinstance(err, PredictionError):
        return err
    if isinstance(err, MemoryError):
        return PredictionError("Prediction failed: the replica ran out of memory.", status=500)
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return PredictionError(f"Prediction failed: {type(err).__name__}" + (f": {text}" if text else ""))


class Engine:
    """Runs a :class:`Predictor` on batches of raw requests. Not thread-safe (one caller)."""

    def __init__(self, predictor: Predictor, max_batch: int = 256, observers: ObserverHub | None = None, *,
                 max_instances: int = MAX_INSTANCES) -> None:
        self.predictor = predictor
        self.max_batch = max(1, max_batch)
        self.observers = observers
        self.max_instances = max(1, max_instances)

    def handle(self, bodies: Sequence[bytes]) -> list[Reply]:
        if self.observers is not None:
            return self._handle_observed(bodies, self.observers)
        replies: list[Reply | None] = [None] * len(bodies)
        ready: list[tuple[int, Prepared]] = []
        for i, body in enumerate(bodies):
            try:
                instances, kwargs = parse_request(body, self.max_instances)
                ready.append((i, self.predictor.prepare(instances, kwargs)))
            except Exception as err:  # a predictor's prepare may raise anything
                replies[i] = self._error(err)
        return self._predict(replies, ready, None)

    def _predict(self, replies: list[Reply | None], ready: list[tuple[int, Prepared]],
                 sink: dict[int, list[Any]] | None) -> list[Reply]:
        for group in self._batches(ready):
            for index, reply in self._run(group, sink):
                replies[index] = reply
        return [r if r is not None else (500, jsonio.error_body("No reply was produced.")) for r in replies]

    def _handle_observed(self, bodies: Sequence[bytes], hub: ObserverHub) -> list[Reply]:
        """:meth:`handle`, also handing every answered request to the observers' hub."""
        replies: list[Reply | None] = [None] * len(bodies)
        ready: list[tuple[int, Prepared]] = []
        parsed: list[tuple[list[Any], dict[str, Any]] | None] = [None] * len(bodies)
        outputs: dict[int, list[Any]] = {}
        for i, body in enumerate(bodies):
            try:
                instances, kwargs = parse_request(body, self.max_instances)
                parsed[i] = (instances, dict(kwargs))
                ready.append((i, self.predictor.prepare(instances, kwargs)))
            except Exception as err:  # a predictor's prepare may raise anything
                replies[i] = self._error(err)
        done = self._predict(replies, ready, outputs)
        self._observe(hub, done, parsed, outputs)
        return done

    @staticmethod
    def _observe(hub: ObserverHub, replies: list[Reply], parsed: list[tuple[list[Any], dict[str, Any]] | None],
                 outputs: dict[int, list[Any]]) -> None:
        now = time.time()
        for i, (status, payload) in enumerate(replies):
            request = parsed[i]
            hub.put(Observation(now, status, payload, request[0] if request else None,
                                request[1] if request else None, outputs.get(i) if status == 200 else None))
        hub.flush_soon()

    def _batches(self, ready: list[tuple[int, Prepared]]) -> list[list[tuple[int, Prepared]]]:
        batches: list[list[tuple[int, Prepared]]] = []
        current: list[tuple[int, Prepared]] = []
        size = 0
        for item in ready:
            prepared = item[1]
            if current and (
                not self.predictor.batchable
                or prepared.key != current[0][1].key
                or size + prepared.count > self.max_batch
            ):
                batches.append(current)
                current, size = [], 0
            current.append(item)
            size += prepared.count
        if current:
            batches.append(current)
        return batches

    def _run(self, group: list[tuple[int, Prepared]],
             sink: dict[int, list[Any]] | None = None) -> list[tuple[int, Reply]]:
        try:
            outputs = self.predictor.predict([p for _, p in group])
        except Exception as err:
            if len(group) > 1:  # pin the failure on the request that caused it
                return [pair for item in group for pair in self._run([item], sink)]
            return [(group[0][0], self._error(err))]
        if sink is not None:
            for (index, _), predictions in zip(group, outputs, strict=True):
                sink[index] = predictions
        replies = []
        for (index, _), predictions in zip(group, outputs, strict=True):
            try:
                replies.append((index, (200, jsonio.dumps({"predictions": predictions}))))
            except (TypeError, ValueError) as err:
                message = f"The predictions cannot be written as JSON: {err}"
                replies.append((index, (500, jsonio.error_body(message))))
        return replies

    def _error(self, err: BaseException) -> Reply:
        if not isinstance(err, PredictionError):
            traceback.print_exception(type(err), err, err.__traceback__, file=sys.stderr)
        problem = _unexpected(err)
        return problem.status, jsonio.error_body(problem.message)
