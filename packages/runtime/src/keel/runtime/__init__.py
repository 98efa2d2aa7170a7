"""An io_uring thread-per-core async runtime with an epoll fallback."""

from importlib.metadata import version as _version

__version__: str = _version("keel-runtime")

__all__ = ["__version__"]
