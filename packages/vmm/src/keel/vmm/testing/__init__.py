"""Scripting VMs from tests: GuestSession, and the pytest fixtures built on it."""

from keel.vmm.testing.session import GuestSession

__all__ = ["GuestSession"]
