"""One predictor per framework (see :mod:`._base` for the contract)."""
