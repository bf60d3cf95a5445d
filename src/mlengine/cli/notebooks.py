"""``mle notebooks``: JupyterLab instances run by the server (Datalab's and Workbench's
shapes): create, list, describe, start, stop, delete, connect, history."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

import click

from mlengine.cli import output
from mlengine.cli.core import MleGroup, client, confirm, project_of, project_option, settings

NOTEBOOKS_TABLE = "table(name.basename():label=NAME, state:label=STATUS, owner, idleTimeout:label=IDLE_TIMEOUT)"
HISTORY_TABLE = "table(shortCommit:label=COMMIT, time:label=TIME, author, message)"
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> str:
    """``90m``, ``2h``, ``45s``, ``0`` (never) as a Duration (``5400s``)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if not match:
        raise click.BadParameter(f"{text!r} is not a duration like 90m, 2h or 3600s", param_hint="--idle-timeout")
    return f"{float(match.group(1)) * _UNITS[match.group(2) or 's']:g}s"


def _path(project: str | None, name: str = "") -> str:
    base = f"/v1/projects/{quote(project_of(project), safe='')}/notebooks"
    return f"{base}/{quote(name, safe='')}" if name else base


@click.group(cls=MleGroup)
def notebooks() -> None:
    """JupyterLab notebook instances that know the server, saved in git.

    \b
    Examples:
      mle notebooks create lab --idle-timeout 90m --git-remote /srv/git/lab.git
      mle notebooks connect lab --open
      mle notebooks history lab
      mle notebooks stop lab
      mle notebooks delete lab --delete-disk --quiet
    """


@notebooks.command()
@click.argument("name")
@project_option
@click.option("--idle-timeout", default=None, metavar="DURATION",
              help="Stop the instance after this long idle (no busy kernel, no terminal activity, no running "
                   "job it submitted): 90m, 2h, 3600s; 0: never. Default 3h.")
@click.option("--git-remote", default=None, metavar="URL",
              help="Push every saved commit here (a git URL or an absolute path the server can write).")
def create(name: str, project: str | None, idle_timeout: str | None, git_remote: str | None) -> None:
    """Create notebook instance NAME and start it.

    \b
    Examples:
      mle notebooks create lab
      mle notebooks create lab --idle-timeout 2h --git-remote /srv/git/lab.git
    """
    body: dict[str, Any] = {"name": name}
    if idle_timeout is not None:
        body["idleTimeout"] = parse_duration(idle_timeout)
    if git_remote:
        body["gitRemote"] = git_remote
    created = client().request("POST", _path(project), json=body)
    output.status(f"Created notebook instance [{name}]; `mle notebooks connect {name}` prints its URL.")
    output.print_resource(created)


@notebooks.command(name="list")
@project_option
def list_(project: str | None) -> None:
    """List notebook instances.

    \b
    Examples:
      mle notebooks list
      mle notebooks list --format "value(name.basename(),state)"
    """
    output.print_list(client().request("GET", _path(project)).get("notebooks", []), NOTEBOOKS_TABLE)


@notebooks.command()
@click.argument("name")
@project_option
def describe(name: str, project: str | None) -> None:
    """Describe notebook instance NAME.

    \b
    Examples:
      mle notebooks describe lab
      mle notebooks describe lab --format "value(state)"
    """
    output.print_resource(client().request("GET", _path(project, name)))


@notebooks.command()
@click.argument("name")
@project_option
def start(name: str, project: str | None) -> None:
    """Start notebook instance NAME (stopped by you, or for idleness).

    \b
    Examples:
      mle notebooks start lab
    """
    output.print_resource(client().request("POST", _path(project, name) + ":start", json={}))


@notebooks.command()
@click.argument("name")
@project_option
def stop(name: str, project: str | None) -> None:
    """Stop notebook instance NAME (its files stay; `start` brings it back).

    \b
    Examples:
      mle notebooks stop lab
    """
    output.print_resource(client().request("POST", _path(project, name) + ":stop", json={}))


@notebooks.command()
@click.argument("name")
@project_option
@click.option("--delete-disk", is_flag=True, help="Also delete the instance's files (and its git repository).")
def delete(name: str, project: str | None, delete_disk: bool) -> None:
    """Delete notebook instance NAME (its files stay unless --delete-disk).

    \b
    Examples:
      mle notebooks delete lab
      mle notebooks delete lab --delete-disk --quiet
    """
    confirm(f"This will delete notebook instance [{name}]{' and its files' if delete_disk else ''}...")
    client().request("DELETE", _path(project, name), params={"deleteDisk": "true" if delete_disk else None})
    output.status(f"Deleted notebook instance [{name}].")


@notebooks.command()
@click.argument("name")
@project_option
@click.option("--open", "open_", is_flag=True, help="Open the URL in a browser.")
@click.option("--with-token", is_flag=True,
              help="Print JupyterLab's URL carrying your own token (for a browser without a console session).")
def connect(name: str, project: str | None, open_: bool, with_token: bool) -> None:
    """Print (or open) the URL of notebook instance NAME, through the server.

    The URL goes through the web console: signed in there (your token, or user and password),
    the console opens JupyterLab through the server's proxy, starting the instance if it is
    stopped. No second password. --with-token prints JupyterLab's own URL with your mlengine
    token once in it (the proxy turns it into a cookie and drops it from the address).

    \b
    Examples:
      mle notebooks connect lab
      mle notebooks connect lab --open
    """
    c = client()
    notebook = c.request("GET", _path(project, name))
    if with_token:
        from mlengine.client.connection import resolve_token

        url = f"{c.url}{notebook['proxyUrl']}?access_token={quote(resolve_token(settings()), safe='')}"
    else:
        url = f"{c.url}/console/projects/{quote(project_of(project), safe='')}/notebooks/{quote(name, safe='')}/open"
    if open_:
        import webbrowser

        webbrowser.open(url)
    click.echo(url)


@notebooks.command()
@click.argument("name")
@project_option
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True, help="Commits to show.")
def history(name: str, project: str | None, limit: int) -> None:
    """The git history of notebook instance NAME (a commit per save, outputs stripped).

    \b
    Examples:
      mle notebooks history lab
      mle notebooks history lab --format json
    """
    commits = client().request("GET", _path(project, name) + "/history", params={"pageSize": limit})
    output.print_list(commits.get("commits", []), HISTORY_TABLE)
