"""Sign-in (a token, or a console user's name and password) and sign-out."""

from __future__ import annotations

import hmac
import secrets
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from mlengine.console.session import (
    COOKIE,
    SIGNIN_COOKIE,
    current_viewer,
    drop_proxy_tokens,
    main_state,
    read_form,
    same_origin,
    sessions,
    set_cookie,
)
from mlengine.errors import Code, MLEngineError
from mlengine.store.console import SESSION_HOURS, ConsoleUsers

router = APIRouter()


def base(request: Request) -> str:
    return str(request.scope.get("root_path", ""))


def _next(request: Request, value: Any) -> str:
    """Where to go after signing in: a path of this console only (no open redirect)."""
    prefix = base(request) + "/"
    if isinstance(value, str) and value.startswith(prefix) and not value.startswith("//") and "\\" not in value:
        return value
    return prefix


def _page(request: Request, error: str = "", status: int = 200) -> Response:
    token = request.cookies.get(SIGNIN_COOKIE) or secrets.token_urlsafe(24)
    response = request.app.state.templates.TemplateResponse(
        request, "signin.html",
        {"base": base(request), "csrf": token, "next": _next(request, request.query_params.get("next")),
         "error": error, "viewer": None}, status_code=status)
    set_cookie(response, request, SIGNIN_COOKIE, token, 3600, base(request) + "/signin")
    return response


@router.get("/signin")
async def signin_page(request: Request) -> Response:
    return _page(request)


@router.post("/signin")
async def signin(request: Request) -> Response:
    if not same_origin(request):
        raise MLEngineError(Code.PERMISSION_DENIED, "Cross-origin request refused (Origin is not this server)")
    form = await read_form(request)
    expected = request.cookies.get(SIGNIN_COOKIE, "")
    sent = form.get("csrf")
    if not expected or not isinstance(sent, str) or not hmac.compare_digest(sent.encode(), expected.encode()):
        raise MLEngineError(Code.PERMISSION_DENIED, "Missing or wrong CSRF token (reload the page and try again)")
    token, username, password = (form.get(k) for k in ("token", "username", "password"))
    state = main_state(request)
    store = sessions(request)
    if store is None:
        raise MLEngineError(Code.UNAVAILABLE, "The console needs the server's database")
    if isinstance(token, str) and token.strip():
        identity = state.tokens.lookup(token.strip())
        if identity is None or identity.job_pk is not None:  # jobs' tokens are for their replicas only
            return _page(request, "That token is not valid (unknown or revoked).", 401)
        _row, secret = await run_in_threadpool(store.create, identity.member, identity.groups,
                                               token_name=identity.name)
    elif isinstance(username, str) and username and isinstance(password, str) and password:
        user = await run_in_threadpool(ConsoleUsers(state.token_repo.db).check, username, password)
        if user is None:
            return _page(request, "Wrong user name or password.", 401)
        _row, secret = await run_in_threadpool(store.create, f"user:{user.name}", list(user.groups or ()),
                                               user_name=user.name)
    else:
        return _page(request, "Enter a token, or a user name and password.", 400)
    expired = await run_in_threadpool(store.purge_expired)
    await run_in_threadpool(drop_proxy_tokens, request, expired)
    response = RedirectResponse(_next(request, form.get("next")), status_code=303)
    set_cookie(response, request, COOKIE, secret, SESSION_HOURS * 3600, base(request) + "/")
    response.delete_cookie(SIGNIN_COOKIE, path=base(request) + "/signin")
    return response


@router.post("/signout")
async def signout(request: Request) -> Response:
    viewer = await current_viewer(request)
    if viewer is not None:
        await run_in_threadpool(sessions(request).end, viewer.secret)
        await run_in_threadpool(drop_proxy_tokens, request, [viewer.session_id])
    response = RedirectResponse(base(request) + "/signin", status_code=303)
    response.delete_cookie(COOKIE, path=base(request) + "/")
    return response
