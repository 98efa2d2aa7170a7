"""Devices the guest reaches through port I/O and MMIO exits, and the Bus that routes them."""
