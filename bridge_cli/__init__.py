"""bridge: a local developer proxy for the HTTP APIs an application depends on."""

__version__ = "0.1.0"
