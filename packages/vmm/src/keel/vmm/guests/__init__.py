"""Test guests: their sources (sources/) and the tooling that builds them (build.py)."""
