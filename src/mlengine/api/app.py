"""The FastAPI application of the control plane."""

from __future__ import annotations

from typing import Any

from fastapi import Depends, FastAPI

import mlengine
from mlengine.api import jobs, system
from mlengine.api.auth import TokenCache, authorize
from mlengine.api.errors import install_error_handlers


def create_app(*, settings: Any, job_service: Any, token_repo: Any, lifespan: Any = None) -> FastAPI:
    app = FastAPI(
        title="mlengine",
        version=mlengine.__version__,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        dependencies=[Depends(authorize)],
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.jobs = job_service
    app.state.token_repo = token_repo
    app.state.tokens = TokenCache(token_repo)
    install_error_handlers(app)
    app.include_router(system.router)
    app.include_router(jobs.router)
    return app
