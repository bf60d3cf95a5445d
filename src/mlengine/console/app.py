"""Builds the console's ASGI app: templates, our static files, Plotly from its wheel, errors."""

from __future__ import annotations

import importlib.resources
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import Depends, FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response

from mlengine.console import signin
from mlengine.console.jobs_pages import router as jobs_router
from mlengine.console.models_pages import router as models_router
from mlengine.console.routes import SignInRequired, guard
from mlengine.errors import MLEngineError
from mlengine.store.console import ConsoleSessions

HERE = Path(__file__).parent
STATIC = HERE / "static"
STATIC_TYPES = {".js": "text/javascript", ".css": "text/css"}
#: No framing (clickjacking of Cancel), scripts only from this origin (Plotly's WebGL traces need
#: eval; its styles are inline), forms post only here.
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; script-src 'self' 'unsafe-eval'; "
                               "style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
                               "frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
}


def plotly_js() -> Path:
    """plotly.min.js as the pinned ``plotly`` wheel ships it (never a copy in this repo)."""
    return Path(str(importlib.resources.files("plotly") / "package_data" / "plotly.min.js"))


def build(main_state: Any) -> FastAPI:
    from fastapi.templating import Jinja2Templates

    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None, dependencies=[Depends(guard)])
    app.state.main = main_state
    db = getattr(main_state.token_repo, "db", None)
    app.state.sessions = ConsoleSessions(db) if db is not None else None
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.globals["quote"] = lambda value: quote(str(value), safe="")
    app.state.templates = templates

    @app.exception_handler(SignInRequired)
    async def _signin(request: Request, _exc: SignInRequired) -> Response:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"{request.scope.get('root_path', '')}/signin?next={quote(target)}", status_code=303)

    @app.exception_handler(MLEngineError)
    async def _error(request: Request, exc: MLEngineError) -> Response:
        status = exc.code.http_status
        if request.url.path.endswith(".json") or "text/html" not in request.headers.get("accept", "text/html"):
            return JSONResponse(exc.to_dict(), status_code=status)
        return templates.TemplateResponse(request, "error.html", {"status": status, "message": exc.message},
                                          status_code=status)

    @app.get("/static/vendor/plotly.min.js")
    async def _plotly() -> Response:
        return FileResponse(plotly_js(), media_type="text/javascript",
                            headers={"cache-control": "public, max-age=86400"})

    @app.get("/static/{name}")
    async def _static(name: str) -> Response:
        path = STATIC / name
        if path.suffix not in STATIC_TYPES or path.parent != STATIC or not path.is_file():
            return HTMLResponse("Not found", status_code=404)
        return FileResponse(path, media_type=STATIC_TYPES[path.suffix], headers={"cache-control": "no-cache"})

    @app.get("/")
    async def _home(request: Request) -> Response:
        project = getattr(main_state.settings, "project", "mlengine")
        return RedirectResponse(f"{request.scope.get('root_path', '')}/projects/{quote(project)}/jobs", 303)

    @app.middleware("http")
    async def _headers(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if response.headers.get("content-type", "").startswith("text/html"):
            response.headers["cache-control"] = "no-store"  # pages carry the session's CSRF token
        return response

    app.include_router(signin.router)
    app.include_router(jobs_router)
    app.include_router(models_router)
    from mlengine.console.notebooks_pages import router as notebooks_router

    app.include_router(notebooks_router)
    return app
