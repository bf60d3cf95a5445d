"""Hyperparameter tuning jobs (``trainingInput.hyperparameters``), built on Optuna.

``spec``      validation of the HyperparameterSpec and its Optuna search space
``samplers``  algorithm -> Optuna sampler; early stopping -> Optuna pruner
``metrics``   what a trial reported (cloudml-hypertune file, TensorFlow events)
``events``    TensorFlow event files decoded without TensorFlow
``studies``   Optuna studies in the metadata store's database
``trials``    trial job rows, judging finished trials, ``trainingOutput``
``tuner``     the decision loop, a hook of the job scheduler
"""
