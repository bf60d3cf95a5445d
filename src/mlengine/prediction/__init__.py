"""Online prediction: models, versions, replicas, the router, predictors per framework."""
