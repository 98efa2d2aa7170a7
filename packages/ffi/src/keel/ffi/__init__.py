"""Call Go from Python: generated bindings, sync and async calls, zero copy."""

from importlib.metadata import version as _version

__version__: str = _version("keel-ffi")

__all__ = ["__version__"]
