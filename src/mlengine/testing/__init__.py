"""Conformance suites shipped with the package: a third-party backend (executor, replica
backend, job kind, service kind) runs the same tests as the built-in ones."""
