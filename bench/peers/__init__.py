"""Servers the serving benchmark compares mlengine with; each runs in its own environment."""
