"""A KVM virtual machine monitor."""

from importlib.metadata import version as _version

__version__: str = _version("keel-vmm")

__all__ = ["__version__"]
