"""Shared primitives: names and labels, processes, environments, packaging, files, time."""
