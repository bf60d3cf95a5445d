"""Which Optuna sampler and pruner a tuning job gets.

=========================  ================================================================
``ALGORITHM_UNSPECIFIED``  Bayesian optimization: multivariate TPE with the constant liar
                           (trials running in parallel are not proposed twice), or Optuna's
                           Gaussian-process sampler when ``MLE_TUNING_BAYESIAN=gp`` (needs
                           torch). Random trials first: :func:`n_startup_trials`.
``RANDOM_SEARCH``          ``RandomSampler``
``GRID_SEARCH``            ``GridSampler`` over every INTEGER/CATEGORICAL/DISCRETE value; the
                           tuner, not the sampler, decides when the grid is done.
=========================  ================================================================

Early stopping (``enableTrialEarlyStopping``) is a conservative ``PercentilePruner``: a running
trial is stopped when even its best value so far is worse than three quarters of the finished
trials at the same step (after :data:`PRUNER_STARTUP_TRIALS` finished trials). The benchmark
(``bench/tuning.py``) runs these very functions in-process, so what it measures is what jobs get.

Importing this module imports Optuna (about 0.3 s): the tuner imports it on first use.
"""

from __future__ import annotations

import warnings
from typing import Any

import optuna

from mlengine.errors import Code, MLEngineError
from mlengine.tuning.spec import TuningSpec

BAYESIAN_CHOICES = ("tpe", "gp")
#: Finished trials the pruner needs before it stops anything, and the share of them a
#: running trial must be worse than (percentile kept).
PRUNER_STARTUP_TRIALS = 3
PRUNER_PERCENTILE = 75.0


def n_startup_trials(max_trials: int) -> int:
    """Random trials before the Bayesian model is used: a sixth of the budget, 3 to 10."""
    return max(3, min(10, max_trials // 6))


def make_sampler(spec: TuningSpec, seed: int | None = None, bayesian: str = "tpe") -> Any:
    """The Optuna sampler for ``spec.algorithm`` (``bayesian`` picks the Bayesian model)."""
    if spec.algorithm == "RANDOM_SEARCH":
        return optuna.samplers.RandomSampler(seed=seed)
    if spec.algorithm == "GRID_SEARCH":
        space = {p.name: p.grid_values() for p in spec.params}
        return TunerGridSampler(space, seed=seed)
    startup = n_startup_trials(spec.max_trials)
    if bayesian == "gp":
        try:
            import torch  # noqa: F401
        except ImportError:
            raise MLEngineError(
                Code.FAILED_PRECONDITION,
                "MLE_TUNING_BAYESIAN=gp needs torch on the server (pip install 'mlengine[torch]'); "
                "unset it to use TPE",
            ) from None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup)
    if bayesian != "tpe":
        raise MLEngineError(Code.FAILED_PRECONDITION,
                            f"MLE_TUNING_BAYESIAN={bayesian!r} is not one of {', '.join(BAYESIAN_CHOICES)}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # multivariate/constant_liar are "experimental"
        return optuna.samplers.TPESampler(
            n_startup_trials=startup, multivariate=True, constant_liar=True, seed=seed
        )


def make_pruner(spec: TuningSpec) -> Any:
    """The pruner behind ``enableTrialEarlyStopping`` (a no-op pruner when it is off)."""
    if not spec.early_stopping:
        return optuna.pruners.NopPruner()
    return optuna.pruners.PercentilePruner(
        PRUNER_PERCENTILE, n_startup_trials=PRUNER_STARTUP_TRIALS, n_warmup_steps=0,
        interval_steps=1, n_min_trials=PRUNER_STARTUP_TRIALS,
    )


class TunerGridSampler(optuna.samplers.GridSampler):
    """``GridSampler`` that never calls ``study.stop()`` (it raises outside ``optimize``); the
    tuner stops asking once every grid point was started (:func:`grid_points_started`)."""

    def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
        return None


def grid_points_started(study: Any) -> int:
    """Distinct grid points the study's trials took (running or finished)."""
    seen = {t.system_attrs.get("grid_id") for t in study.get_trials(deepcopy=False)}
    seen.discard(None)
    return len(seen)
