"""Request-response logging and training-serving skew and drift (docs/monitoring.md).

``spec`` validates the Version fields, ``logs`` writes and queries request logs, ``stats``
profiles columns, ``distance`` compares profiles, ``baseline`` finds and profiles training data,
``runs`` analyses a serving window, ``alerts`` posts webhooks, ``report`` draws the page, and
``service`` wires it all into the control plane.
"""
