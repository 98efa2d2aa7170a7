"""An Axum-style typed HTTP framework and a fast HTTP/1.1 server."""

from importlib.metadata import version as _version

__version__: str = _version("keel-http")

__all__ = ["__version__"]
