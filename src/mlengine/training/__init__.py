"""Training jobs: job spec, packaging, environments, cluster spec, scheduler, executors."""
