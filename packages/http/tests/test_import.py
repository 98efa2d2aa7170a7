"""The package installs as part of the keel namespace and knows its own version."""

import importlib.metadata

import keel.http


def test_version_matches_distribution() -> None:
    assert keel.http.__version__ == importlib.metadata.version("keel-http")


def test_keel_is_a_namespace_package() -> None:
    import keel

    assert not hasattr(keel, "__file__") or keel.__file__ is None
