"""Test support shared by every keel package (leak checks, skip reasons)."""
