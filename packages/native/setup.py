"""The cffi extension modules are declared here: pyproject.toml cannot name cffi_modules."""

from setuptools import setup

setup(
    cffi_modules=[
        "src/keel/native/_build/kvm_build.py:ffibuilder",
        "src/keel/native/_build/uring_build.py:ffibuilder",
        "src/keel/native/_build/sys_build.py:ffibuilder",
        "src/keel/native/_build/virtio_build.py:ffibuilder",
    ]
)
