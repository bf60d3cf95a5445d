"""Tiny distributed trainers for the test suite and bench/distributed.py (taxi fares)."""
