"""Every ``ml`` v1 method the server does not serve answers 501 UNIMPLEMENTED naming the method.

The methods come from the ``ml`` v1 discovery document shipped in the PyPI package
``google-api-python-client`` (``googleapiclient/discovery_cache/documents/ml.v1.json``), read
when the app is created (without importing ``googleapiclient``). For each method (its
``httpMethod``, ``path`` and the ``pattern`` of its path parameters):

- served: some route of the app answers that HTTP method on a path the method's pattern
  matches. Nothing is added, except when the pattern allows more than the served routes do
  (``v1/{+name}:predict`` with ``name`` ``^projects/.*$``, served for models and versions
  only): a fallback route *after* the served ones answers 400 INVALID_ARGUMENT naming the
  field and the names that are accepted.
- not served: a route is inserted *before* the served ones (so that ``GET
  .../models/M:getIamPolicy`` is not taken for the model ``M:getIamPolicy``) that checks the
  bearer token (any valid token) and answers 501 UNIMPLEMENTED naming the method.

``google-api-python-client`` is a dependency of mlengine, so the document is there; without it
(a broken installation) nothing is added and a warning says so.
Generated routes are marked :class:`GeneratedRoute`; they declare no permission of the
permission table because they do nothing.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.routing import Route

from mlengine.api.auth import authenticate, error_triple
from mlengine.errors import Code, MLEngineError, invalid

log = logging.getLogger("mlengine.api")
DOCUMENT = ("discovery_cache", "documents", "ml.v1.json")
_PARAM = re.compile(r"\{[^}]*\}")


@dataclass(frozen=True)
class Method:
    """One method of the discovery document, as a Starlette path template and a regex."""

    id: str
    http_method: str
    template: str  # /v1/projects/{p0}/models/{p1}:getIamPolicy
    regex: re.Pattern[str]
    flat_path: str  # /v1/projects/{projectsId}/models/{modelsId}:getIamPolicy
    wildcard: bool  # a parameter may span several segments (``.*``)
    field: str  # the path parameter (``name``, ``parent``, ``resource``)


@functools.lru_cache(maxsize=1)
def document_path() -> Path | None:
    """The discovery document of ``ml`` v1 shipped with google-api-python-client, if installed."""
    try:
        spec = importlib.util.find_spec("googleapiclient")
    except (ImportError, ValueError):
        return None
    for location in (spec.submodule_search_locations or []) if spec else []:
        path = Path(location).joinpath(*DOCUMENT)
        if path.is_file():
            return path
    return None


_TOKEN = re.compile(r"\[\^/\]\+|\.\*")


def _segments(pattern: str, counter: list[int]) -> tuple[str, bool]:
    """A path parameter's ``pattern`` (``^projects/[^/]+/models/[^/]+$``) as a template
    (``projects/{p0}/models/{p1}``); True when a part may span segments (``.*``)."""
    wildcard = False

    def parameter(match: re.Match[str]) -> str:
        nonlocal wildcard
        index = counter[0]
        counter[0] += 1
        if match.group() == ".*":
            wildcard = True
            return f"{{p{index}:path}}"
        return f"{{p{index}}}"

    body = pattern.removeprefix("^").removesuffix("$")
    return _TOKEN.sub(parameter, body), wildcard


def _regex(template: str) -> re.Pattern[str]:
    out, last = [], 0
    for match in _PARAM.finditer(template):
        out.append(re.escape(template[last:match.start()]))
        out.append(".*" if match.group().endswith(":path}") else "[^/]+")
        last = match.end()
    out.append(re.escape(template[last:]))
    return re.compile("^" + "".join(out) + "$")


def methods(document: dict[str, Any]) -> list[Method]:
    """Every method of a discovery document (resources walked recursively)."""
    found: list[Method] = []

    def walk(resource: dict[str, Any]) -> None:
        for method in (resource.get("methods") or {}).values():
            path = "/" + method["path"]
            counter, wildcard, field = [0], False, ""
            for name, parameter in (method.get("parameters") or {}).items():
                if parameter.get("location") != "path":
                    continue
                field = name
                template, spans = _segments(parameter.get("pattern") or "[^/]+", counter)
                wildcard = wildcard or spans
                path = path.replace(f"{{+{name}}}", template).replace(f"{{{name}}}", template)
            found.append(Method(method["id"], method["httpMethod"], path, _regex(path),
                                "/" + method.get("flatPath", method["path"]), wildcard, field))
        for child in (resource.get("resources") or {}).values():
            walk(child)

    walk(document)
    return found


def load_methods() -> list[Method]:
    path = document_path()
    if path is None:
        log.warning("google-api-python-client (a dependency of mlengine) is not installed: unserved ml v1 "
                    "methods answer 404, not 501; reinstall mlengine")
        return []
    return methods(json.loads(path.read_text()))


def _sample(template: str) -> str:
    return _PARAM.sub("x1", template)


class GeneratedRoute(Route):
    """A route made from the discovery document (not one the server implements)."""


class _Answer:
    """ASGI endpoint: check the bearer token, then answer with ``error``."""

    def __init__(self, error: MLEngineError) -> None:
        self.error = error

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        headers = dict(scope.get("headers") or [])
        try:
            authenticate(scope["app"].state.tokens, headers.get(b"authorization", b"").decode("latin-1"))
            status, body, extra = error_triple(self.error)
        except MLEngineError as denied:
            status, body, extra = error_triple(denied)
        await send({"type": "http.response.start", "status": status, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra]})
        await send({"type": "http.response.body", "body": body})


def unimplemented_error(method: Method) -> MLEngineError:
    return MLEngineError(Code.UNIMPLEMENTED, f"Method {method.id} ({method.http_method} {method.flat_path}) is not "
                         "implemented by mlengine.")


def install(app: Any, served: list[tuple[str, str]], found: list[Method] | None = None) -> list[Method]:
    """Add the routes of the module docstring to ``app``; ``served`` is the app's own
    ``(method, path template)`` list. Returns the methods answered with 501."""
    samples = [(http, template, _sample(template)) for http, template in served]
    unserved: list[Method] = []
    before: list[Route] = []
    after: list[Route] = []
    for method in load_methods() if found is None else found:
        matching = [template for http, template, sample in samples
                    if http == method.http_method and method.regex.match(sample)]
        if not matching:
            unserved.append(method)
            before.append(GeneratedRoute(method.template, _Answer(unimplemented_error(method)),
                                         methods=[method.http_method]))
        elif method.wildcard:
            accepted = " or ".join(sorted({re.sub(r"\{(\w+)[^}]*\}", r"{\1}", t)[len("/v1/"):].split(":")[0]
                                           for t in matching}))
            error = invalid(method.field, f"{method.id} accepts {accepted} here")
            after.append(GeneratedRoute(method.template, _Answer(error), methods=[method.http_method]))
    app.router.routes[:0] = before
    app.router.routes.extend(after)
    return unserved
