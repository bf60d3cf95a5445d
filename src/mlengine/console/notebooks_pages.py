"""The console's door to notebook instances (issue 14): ``GET .../notebooks/N/open`` takes a
signed-in browser to the instance's JupyterLab through the server's proxy, the way the job
page opens TensorBoard: with the session's proxy token (:func:`~mlengine.console.session.mint_proxy_token`),
handed to the proxy once in the redirect; it is one token for every service of the session, so
opening a notebook leaves an open TensorBoard tab signed in. Not signed in: the sign-in page, then back here.
What ``mle notebooks connect`` prints. A GET, so a link works; the session cookie is
``SameSite=Strict``, so another site cannot make a signed-in browser follow it."""

from __future__ import annotations

from urllib.parse import quote, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from mlengine.console.session import main_state, mint_proxy_token
from mlengine.core import iam
from mlengine.errors import Code, MLEngineError, not_found

router = APIRouter()


@router.get("/projects/{project}/notebooks/{notebook}/open")
async def open_notebook(project: str, notebook: str, request: Request) -> Response:
    from mlengine.services import states as st
    from mlengine.services.kinds.notebook import NotebookKind

    state = main_state(request)
    viewer = request.state.viewer
    manager = getattr(state, "services", None)
    if manager is None:
        raise MLEngineError(Code.UNAVAILABLE, "Services are not enabled on this server")
    row = await run_in_threadpool(manager.get, project, notebook)
    if row.kind != NotebookKind.name:
        raise not_found(f"Notebook projects/{project}/notebooks/{notebook}")
    if row.state in (st.STOPPED, st.FAILED):  # opening a stopped instance starts it
        state.iam.require(viewer.identity, "mlengine.services.start", iam.project_resource(project))
        await run_in_threadpool(manager.start_service, project, notebook)
    token = await run_in_threadpool(mint_proxy_token, request, viewer)
    url = f"/v1/projects/{quote(project)}/services/{quote(notebook)}/proxy/lab"
    return RedirectResponse(f"{url}?{urlencode({'access_token': token})}", status_code=303,
                            headers={"referrer-policy": "no-referrer", "cache-control": "no-store"})
