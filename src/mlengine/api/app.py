"""The FastAPI application of the control plane."""

from __future__ import annotations

from typing import Any

from fastapi import Depends, FastAPI

import mlengine
from mlengine.api import discovery, health, iam, jobs, locations, models, operations, services, system, vizier
from mlengine.api.auth import Authorizer, TokenCache, authorize, authorize_predict
from mlengine.api.errors import install_error_handlers
from mlengine.api.hosts import HostGuard
from mlengine.api.paths import check_path
from mlengine.api.users import router as users_router


def create_app(*, settings: Any, job_service: Any, token_repo: Any, lifespan: Any = None,
               model_service: Any = None, serving: Any = None, services_manager: Any = None,
               operations_runner: Any = None, policies: Any = None, service_accounts: Any = None,
               vizier_service: Any = None) -> FastAPI:
    """The control plane's app over the given components. ``policies`` (a
    :class:`~mlengine.store.iam.PolicyStore`) defaults to one over the token repository's
    store (in memory only without one)."""
    from mlengine.store.iam import PolicyStore

    app = FastAPI(
        title="mlengine",
        version=mlengine.__version__,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        dependencies=[Depends(authorize), Depends(check_path)],
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.jobs = job_service
    app.state.token_repo = token_repo
    app.state.tokens = TokenCache(token_repo)
    app.state.policies = policies if policies is not None else PolicyStore(getattr(token_repo, "db", None))
    app.state.iam = Authorizer(app.state.policies)
    app.state.service_accounts = service_accounts
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(system.router)
    app.include_router(users_router)
    app.include_router(iam.router)  # before jobs and models: GET .../jobs/J:getIamPolicy is no job J:...
    app.include_router(jobs.router)
    app.state.models = model_service
    app.state.serving = serving
    app.include_router(models.router)
    from mlengine.api import monitoring

    app.include_router(monitoring.router)
    app.router.routes.extend(models.PREDICT_ROUTES)
    app.state.operations = operations_runner
    app.include_router(operations.router)
    app.state.services = services_manager
    app.include_router(services.router)
    app.router.routes.extend(services.PROXY_ROUTES)
    from mlengine.api import notebooks

    app.include_router(notebooks.router)
    app.state.vizier = vizier_service
    app.include_router(locations.router)
    app.include_router(vizier.router)
    from mlengine.prediction.router import PredictMiddleware

    app.add_middleware(PredictMiddleware, authorize=authorize_predict)
    app.state.unimplemented = discovery.install(app, iter_routes(app))
    from mlengine.console import create_console

    app.mount("/console", create_console(app.state))  # session-cookie auth: mlengine.console.routes
    app.state.server_hosts = set()  # the host serve() binds (api/hosts.py)
    app.add_middleware(HostGuard, state=app.state)  # outermost: before routing and predictions
    if getattr(settings, "log_format", "text") == "json":
        from mlengine.api.request_log import RequestIds

        app.add_middleware(RequestIds)  # around everything: refusals get an id too
    return app


def iter_routes(app: FastAPI, generated: bool = False) -> list[tuple[str, str]]:
    """Every (method, path template) the app serves, walking included routers (newer
    FastAPI versions keep them as lazy wrappers); with ``generated``, also the routes made
    from the discovery document (:mod:`mlengine.api.discovery`: 501s, no permission)."""
    found: list[tuple[str, str]] = []

    def walk(routes: Any, prefix: str) -> None:
        for route in routes:
            original = getattr(route, "original_router", None)
            if original is not None:
                context = getattr(route, "include_context", None)
                walk(original.routes, prefix + (getattr(context, "prefix", "") or ""))
                continue
            if isinstance(route, discovery.GeneratedRoute) and not generated:
                continue
            methods = getattr(route, "methods", None) or ()
            for method in sorted(methods):
                if method != "HEAD":
                    found.append((method, prefix + route.path))

    walk(app.routes, "")
    return found
