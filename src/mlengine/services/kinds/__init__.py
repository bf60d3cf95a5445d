"""Built-in service kinds (each a :class:`~mlengine.services.ServiceKind` in its own module)."""
