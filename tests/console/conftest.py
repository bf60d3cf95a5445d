from tests.inprocess import client, inprocess_server, project, server, trainer_package  # noqa: F401
