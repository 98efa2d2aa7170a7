"""The package installs as part of the keel namespace and knows its own version."""

import importlib.metadata

import keel.vmm


def test_version_matches_distribution() -> None:
    assert keel.vmm.__version__ == importlib.metadata.version("keel-vmm")


def test_keel_is_a_namespace_package() -> None:
    import keel

    assert not hasattr(keel, "__file__") or keel.__file__ is None


def test_main_names_are_importable_from_the_package() -> None:
    from keel.vmm.machine import Vm
    from keel.vmm.testing.session import GuestSession

    assert keel.vmm.Vm is Vm and keel.vmm.GuestSession is GuestSession
    assert issubclass(keel.vmm.LoaderError, keel.vmm.VmmError)
    try:
        keel.vmm.NoSuchThing  # noqa: B018
    except AttributeError as error:
        assert "NoSuchThing" in str(error)
    else:
        raise AssertionError("unknown names must raise AttributeError")
