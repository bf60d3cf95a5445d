"""The AI Platform Optimizer (Vizier) API: studies and trials over Optuna (:mod:`.service`),
study configs and values (:mod:`.config`), rendering (:mod:`.render`).

Importing :mod:`.service` imports Optuna: the API imports it on first use."""
