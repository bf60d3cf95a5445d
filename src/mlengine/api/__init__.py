"""The REST API of the control plane (FastAPI): one module per resource."""
