"""The control-plane process: ``python -m mlengine.api.server --host H --port P``.

Start-up: open (and migrate) the metadata store, make sure the admin token exists, start the
scheduler (which reconciles jobs a previous process left behind), then serve HTTP. Once the
socket listens, ``MLE_HOME/server.json`` records the URL and pid for clients; a clean
shutdown (SIGTERM/SIGINT) removes it. Replicas are never stopped by a server shutdown.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import logging
import os
import socket
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import mlengine
from mlengine.config import Settings, load_settings
from mlengine.core.files import write_atomic
from mlengine.errors import MLEngineError

log = logging.getLogger("mlengine.server")
ADMIN_ROLES = ("roles/ml.admin", "roles/owner")


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (mode 0600), atomically."""
    write_atomic(path, text, mode=0o600)


def ensure_admin_token(settings: Settings, repo: Any, policies: Any = None) -> None:
    """On first start create the ``admin`` token and write it to ``MLE_HOME/admin_token``.

    Its principal (``user:admin``) is bound to roles/ml.admin on the server-wide policy, again
    at every start if the binding was removed: whoever can read ``MLE_HOME`` administers the server.
    """
    from mlengine.core import iam

    path = settings.token_file
    principal = None
    if path.exists():
        row = repo.find(path.read_text().strip())
        if row is not None:
            os.chmod(path, 0o600)
            principal = row.principal
    if principal is None:
        for row in repo.all():
            if row.name == "admin":
                repo.delete("admin")
        row, secret = repo.create("admin")
        write_private(path, secret + "\n")
        principal = row.principal
    if policies is not None:
        server = policies.get(iam.SERVER).bindings
        if not any(b.condition is None and principal in b.members and b.role in ADMIN_ROLES for b in server):
            policies.add_member(iam.SERVER, "roles/ml.admin", principal)


def build_kinds(settings: Settings, context: Any, env_cache: Any) -> Any:
    """The built-in job kinds, then ``MLE_JOB_KINDS`` (first match wins: tuning before training)."""
    from mlengine.batch.kind import BatchPredictionKind
    from mlengine.jobs.kinds import KindRegistry, load_kind
    from mlengine.preprocessing.kind import PreprocessingKind
    from mlengine.training.kind import TrainingKind
    from mlengine.tuning.kind import TrialKind, TuningKind

    training = TrainingKind(context, env_cache)
    registry = KindRegistry([TuningKind(context, training), training, TrialKind(context, env_cache),
                             BatchPredictionKind(context), PreprocessingKind(context, env_cache)])
    for path in settings.job_kinds:
        registry.register(load_kind(path, context))
    return registry


def build_components(settings: Settings) -> dict[str, Any]:
    from mlengine.core.environments import EnvironmentCache
    from mlengine.jobs import sandboxing
    from mlengine.jobs.executors import create_executor
    from mlengine.jobs.identity import JobCredentials
    from mlengine.jobs.kinds import KindContext
    from mlengine.jobs.scheduler import Scheduler
    from mlengine.jobs.service import JobService
    from mlengine.store.database import open_database
    from mlengine.store.iam import PolicyStore, ServiceAccountRepository
    from mlengine.store.jobs import JobRepository
    from mlengine.store.tokens import TokenRepository

    db = open_database(settings.resolved_database_url)
    token_repo = TokenRepository(db)
    policies = PolicyStore(db)
    ensure_admin_token(settings, token_repo, policies)
    credentials = JobCredentials(token_repo)
    job_repo = JobRepository(db)
    executor = create_executor(settings)
    wake_target: list[Any] = []
    context = KindContext(settings, job_repo, db, lambda: wake_target[0]())
    confinement = sandboxing.build_confinement(settings)
    kinds = build_kinds(settings, context, EnvironmentCache(settings.envs_dir, confinement=confinement))
    scheduler = Scheduler(settings, job_repo, executor, kinds, credentials)
    wake_target.append(scheduler.wake)
    service = JobService(settings, job_repo, kinds, scheduler.wake, policies)
    parts = {"db": db, "token_repo": token_repo, "job_repo": job_repo, "executor": executor,
             "scheduler": scheduler, "job_service": service, "kinds": kinds,
             "operations": build_operations(settings, db), "policies": policies,
             "service_accounts": ServiceAccountRepository(db), "credentials": credentials}
    parts.update(build_serving(settings, db, parts["operations"], policies))
    parts["monitoring"] = build_monitoring(settings, db, parts["serving"])
    parts.update(build_services(settings, db, token_repo))
    parts["vizier"] = build_vizier(settings, db)
    return parts


def build_vizier(settings: Settings, db: Any) -> Any:
    """The Optimizer (Vizier) API's studies, in the same Optuna storage as tuning jobs'."""
    from mlengine.tuning.vizier.service import VizierService

    return VizierService(db, settings.tuning_bayesian)


def build_operations(settings: Settings, db: Any) -> Any:
    """The runner of long-running operations of every kind (workers under MLE_HOME/operations)."""
    from mlengine.jobs.operations import OperationRunner
    from mlengine.store.operations import OperationRepository

    return OperationRunner(OperationRepository(db), settings.home / "operations")


def build_serving(settings: Settings, db: Any, operations: Any, policies: Any = None) -> dict[str, Any]:
    """Models, versions and online prediction: the service behind the API and the manager,
    which owns the version operations."""
    from mlengine.prediction.manager import ServingManager
    from mlengine.prediction.service import ModelService
    from mlengine.store.serving import ServingRepository

    repo = ServingRepository(db)
    manager = ServingManager(settings, repo, operations)
    service = ModelService(settings, repo, operations, events=manager, counts=manager.counts, policies=policies)
    return {"serving": manager, "model_service": service}


def build_monitoring(settings: Settings, db: Any, serving: Any) -> Any:
    """Request logging on the serving pools, baselines, skew and drift runs (docs/monitoring.md)."""
    from mlengine.monitoring.service import MonitoringService

    monitoring = MonitoringService(settings, db, serving.version_root)
    serving.pool_hooks.append(monitoring.attach)
    return monitoring


def build_services(settings: Settings, db: Any, token_repo: Any = None) -> dict[str, Any]:
    """Services: the built-in kinds (notebook, tensorboard), then ``MLE_SERVICE_KINDS``, and their manager."""
    from mlengine.core.environments import EnvironmentCache
    from mlengine.jobs import sandboxing
    from mlengine.services import ServiceContext, ServiceRegistry, load_service_kind
    from mlengine.services.manager import ServiceManager
    from mlengine.store.services import ServiceRepository

    environments = EnvironmentCache(settings.envs_dir, confinement=sandboxing.build_confinement(settings))
    context = ServiceContext(settings, db, token_repo, environments)
    from mlengine.services.kinds.notebook import NotebookKind
    from mlengine.services.kinds.tensorboard import TensorBoardKind

    registry = ServiceRegistry([NotebookKind(context), TensorBoardKind(context)])
    for path in settings.service_kinds:
        registry.register(load_service_kind(path, context))
    return {"services": ServiceManager(settings, ServiceRepository(db), registry), "service_kinds": registry}


def build_app(settings: Settings, *, on_shutdown: Callable[[], None] | None = None) -> tuple[Any, dict[str, Any]]:
    """The control plane's ASGI app over freshly built components, and those components.

    Makes ``MLE_HOME`` (mode 0700) and builds :func:`build_components`. The app's lifespan
    starts what works in the background (the scheduler, which reconciles jobs first, serving,
    operations, services) and stops it at shutdown, calling ``on_shutdown`` on the way; running
    replicas and services are never stopped. The store stays open: whoever runs the app
    disposes ``parts["db"]`` once it is done. :func:`serve` runs this app under uvicorn;
    :mod:`mlengine.testing.inprocess` runs the same app inside the caller's process.
    """
    from mlengine.api.app import create_app
    from mlengine.api.health import start_metrics_port
    from mlengine.services.proxy import close_clients as close_service_clients

    settings.home.mkdir(parents=True, exist_ok=True)
    os.chmod(settings.home, 0o700)
    parts = build_components(settings)
    scheduler = parts["scheduler"]

    @contextlib.asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        scheduler.start()
        await parts["serving"].start()
        await parts["monitoring"].start()
        await parts["operations"].reconcile()  # once their owners have reconciled
        parts["services"].start()
        metrics_port = start_metrics_port(_app.state, settings) if settings.metrics_port else None
        yield
        if metrics_port is not None:
            metrics_port.shutdown()
        parts["services"].stop()  # services keep running, like replicas
        await close_service_clients()
        await parts["monitoring"].stop()
        await parts["serving"].stop()
        if on_shutdown is not None:
            on_shutdown()
        scheduler.stop()
        parts["executor"].close()
        parts["vizier"].close()

    app = create_app(settings=settings, job_service=parts["job_service"],
                     token_repo=parts["token_repo"], lifespan=lifespan,
                     model_service=parts["model_service"], serving=parts["serving"],
                     services_manager=parts["services"], operations_runner=parts["operations"],
                     policies=parts["policies"], service_accounts=parts["service_accounts"],
                     vizier_service=parts["vizier"])
    app.state.scheduler = scheduler  # /readyz asks whether it runs
    app.state.monitoring = parts["monitoring"]
    return app, parts


def serve(settings: Settings, host: str, port: int) -> None:
    import uvicorn

    def forget_server_file() -> None:
        with contextlib.suppress(Exception):
            recorded = json.loads(settings.server_file.read_text())
            if recorded.get("pid") == os.getpid():
                settings.server_file.unlink()

    # uvicorn re-raises the signal that stopped it after shutdown: clean up in the lifespan.
    app, parts = build_app(settings, on_shutdown=forget_server_file)
    app.state.server_hosts.add(host)

    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound_port = sock.getsockname()[1]
    url_host = f"[{host}]" if ":" in host else host
    url = f"http://{url_host}:{bound_port}"
    # Trainers reach the server here (MLE_API_URL): on this machine, loopback for a wildcard bind.
    local = {"0.0.0.0": "127.0.0.1", "::": "[::1]", "": "127.0.0.1"}.get(host, url_host)
    parts["credentials"].api_url = f"http://{local}:{bound_port}"

    class RecordingServer(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            write_private(settings.server_file, json.dumps({
                "url": url, "pid": os.getpid(), "host": host, "port": bound_port,
                "version": mlengine.__version__,
                "startedAt": dt.datetime.now(dt.timezone.utc).isoformat(),
            }))
            log.info("mlengine %s listening on %s (executor: %s, store: %s)", mlengine.__version__,
                     url, settings.executor, settings.resolved_database_url.split("@")[-1])

    from uvicorn.config import LOGGING_CONFIG

    config = uvicorn.Config(app, log_level=settings.log_level, access_log=False,
                            timeout_graceful_shutdown=5, lifespan="on",
                            log_config=None if settings.log_format == "json" else LOGGING_CONFIG)  # JSON: root's
    server = RecordingServer(config)
    try:
        server.run(sockets=[sock])
    finally:
        forget_server_file()
        parts["db"].dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mlengine-server", description="The mlengine control plane.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--executor", default=None, help="local | ray (default: MLE_EXECUTOR or local)")
    parser.add_argument("--ray-address", default=None)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = load_settings(executor=args.executor, ray_address=args.ray_address,
                                 database_url=args.database_url)
        if settings.log_format == "json":
            from mlengine.api.request_log import configure_json_logging

            configure_json_logging(settings.log_level)
        serve(settings, args.host, args.port)
    except MLEngineError as exc:
        print(f"ERROR: {exc.message}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"ERROR: cannot start the server: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # the store cannot be opened or migrated: say which, no traceback
        from sqlalchemy.exc import SQLAlchemyError

        if not isinstance(exc, SQLAlchemyError):
            raise
        where = settings.resolved_database_url.split("@")[-1] if "settings" in locals() else "?"
        detail = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        print(f"ERROR: cannot open the metadata store {where} (MLE_DATABASE_URL): {detail}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
