"""API tests talk to the real control plane running in process (tests/inprocess.py)."""

from tests.inprocess import client, inprocess_server, project, server, trainer_package  # noqa: F401
