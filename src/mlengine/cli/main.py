"""The ``mle`` entry point (console script ``mle = mlengine.cli.main:main``)."""

from __future__ import annotations

import click

from mlengine import __version__
from mlengine.cli.auth import auth
from mlengine.cli.core import MleGroup
from mlengine.cli.jobs import jobs
from mlengine.cli.local import local
from mlengine.cli.models import models
from mlengine.cli.notebooks import notebooks
from mlengine.cli.operations import operations
from mlengine.cli.predict import local_predict, predict
from mlengine.cli.projects import projects
from mlengine.cli.server import server
from mlengine.cli.tensorboard import tensorboard
from mlengine.cli.versions import versions
from mlengine.config import settings_table


def _environment_help() -> str:
    lines = ["\b", "Environment variables:"]
    lines += [f"  {name:<26} {text}" for name, text in settings_table()]
    return "\n".join(lines)


@click.group(
    cls=MleGroup,
    name="mle",
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=_environment_help(),
)
@click.version_option(__version__, "--version", prog_name="mle", message="%(prog)s %(version)s")
def cli() -> None:
    """mlengine: the AI Platform (Cloud ML Engine) workflow on your own machines.

    Commands follow `gcloud ai-platform`: run a trainer package locally, start the server,
    submit it as a training job, follow its logs.

    \b
    Examples:
      mle local train --package-path trainer --module-name trainer.task -- --epochs 1
      mle server start
      mle jobs submit training my_job --package-path trainer \\
          --module-name trainer.task --job-dir /tmp/out --stream-logs -- --epochs 5
      mle jobs list
    """


cli.add_command(server)
cli.add_command(auth)
cli.add_command(jobs)
cli.add_command(local)
cli.add_command(models)
cli.add_command(operations)
cli.add_command(projects)
cli.add_command(versions)
cli.add_command(predict)
cli.add_command(notebooks)
cli.add_command(tensorboard)
local.add_command(local_predict)


def main() -> None:
    cli(prog_name="mle")


if __name__ == "__main__":
    main()
