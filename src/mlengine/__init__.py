"""mlengine: the AI Platform (Cloud ML Engine) workflow on your own machines."""

__version__ = "0.1.0"


def load_ipython_extension(ipython: object) -> None:
    """``%load_ext mlengine``: the ``%%sql`` and ``%mle`` magics (:mod:`mlengine.notebook.magics`)."""
    import importlib

    # By name: the package root sits under every layer and must not import the top one.
    importlib.import_module("mlengine.notebook.magics").load_ipython_extension(ipython)
