"""mlengine: the AI Platform (Cloud ML Engine) workflow on your own machines."""

__version__ = "0.1.0"
