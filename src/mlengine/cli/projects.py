"""``mle projects``: the IAM policy of a project (``gcloud projects ...-iam-policy...``).

Projects exist implicitly (any project id is usable); their policies grant roles on everything
in them: jobs, models, operations, services.
"""

from __future__ import annotations

import click

from mlengine.cli.core import MleGroup
from mlengine.cli.iam import add_iam_commands, project_resource


@click.group(cls=MleGroup)
def projects() -> None:
    """Manage the IAM policies of projects (roles on every job and model in them).

    \b
    Examples:
      mle projects get-iam-policy mlengine
      mle projects add-iam-policy-binding mlengine --member user:ann --role roles/ml.developer
      mle projects remove-iam-policy-binding mlengine --member user:ann --role roles/ml.developer
    """


add_iam_commands(projects, "PROJECT_ID", project_resource, "mlengine", "project PROJECT_ID", "roles/ml.developer",
                 with_project=False)
