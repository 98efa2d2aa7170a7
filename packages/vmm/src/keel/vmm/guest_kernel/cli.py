"""Click commands `build-kernel` and `build-initramfs` (`--python` for a CPython user space)
for `keel vmm guest`.

Why here and not in keel.vmm.cli: the guest group there mounts these two commands
(`guest.add_command(build_kernel_command)`, `guest.add_command(build_initramfs_command)`), so
the tooling and its command-line face live together.
"""

from __future__ import annotations

from pathlib import Path

import click

from keel.vmm.guest_kernel.errors import GuestKernelError
from keel.vmm.guest_kernel.initramfs import BUSYBOX_PATH, build_initramfs
from keel.vmm.guest_kernel.kernel import build_kernel
from keel.vmm.guest_kernel.python_initramfs import build_python_initramfs


@click.command("build-kernel")
@click.option("--rebuild", is_flag=True, help="Build again even if the cache has it.")
@click.option("--jobs", type=click.IntRange(1, 256), default=None,
              help="make -j (default: the number of CPUs).")
@click.option("--keep-tree", is_flag=True, help="Keep the build tree (about 1.5 GB).")
def build_kernel_command(rebuild: bool, jobs: int | None, keep_tree: bool) -> None:
    """Build the guest kernel (vmlinux with a PVH entry) from Debian's linux-source-6.1."""
    try:
        result = build_kernel(progress=click.echo, jobs=jobs, rebuild=rebuild,
                              keep_tree=keep_tree)
    except GuestKernelError as error:
        raise click.ClickException(str(error)) from None
    click.echo(str(result.vmlinux))


def _parse_added_file(text: str) -> tuple[str, Path]:
    guest, separator, host = text.partition("=")
    if not separator or not guest.strip("/") or not host:
        raise click.BadParameter(f"{text!r} is not GUEST_PATH=HOST_FILE")
    path = Path(host)
    if not path.is_file():
        raise click.BadParameter(f"{host} is not a file")
    return guest.strip("/"), path


@click.command("build-initramfs")
@click.option("--init", "init_path", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The program or script to run as /init.")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where to write the .cpio.gz (default: the cache).")
@click.option("--no-busybox", is_flag=True, help="Leave busybox out (just /init).")
@click.option("--busybox", "busybox_path", default=str(BUSYBOX_PATH), show_default=True,
              type=click.Path(dir_okay=False, path_type=Path), help="A static busybox.")
@click.option("--add-file", "added_files", multiple=True, metavar="GUEST_PATH=HOST_FILE",
              help="Put HOST_FILE in the initramfs at GUEST_PATH (executable); repeatable.")
@click.option("--python", "with_python", is_flag=True,
              help="Add this host's CPython 3 (interpreter, standard library, the shared "
                   "libraries they need) as /usr/bin/python3.")
@click.option("--install", "requirements", multiple=True, metavar="SPEC",
              help="With --python: pip-install SPEC (a local project directory or a PyPI "
                   "requirement) and its dependencies into the guest's site-packages; "
                   "repeatable.")
@click.option("--rebuild", is_flag=True,
              help="With --python: build again even if the cache has it.")
def build_initramfs_command(init_path: Path, output: Path | None, no_busybox: bool,
                            busybox_path: Path, added_files: tuple[str, ...], with_python: bool,
                            requirements: tuple[str, ...], rebuild: bool) -> None:
    """Build a gzip'd newc initramfs: busybox-static and its applets, plus your /init, and
    with --python a CPython user space with the distributions you --install."""
    if (requirements or rebuild) and not with_python:
        raise click.UsageError("--install and --rebuild go with --python")
    files = {guest: host.read_bytes()
             for guest, host in map(_parse_added_file, added_files)}
    busybox = None if no_busybox else busybox_path
    try:
        if with_python:
            result = build_python_initramfs(init_path, install=requirements, busybox=busybox,
                                            files=files, output=output, rebuild=rebuild,
                                            progress=click.echo)
            click.echo(f"python in the guest: {result.python} (/usr/bin/python3), "
                       f"site-packages {result.site_packages}")
            path = result.path
        else:
            path = build_initramfs(init_path, busybox=busybox, files=files, output=output)
    except GuestKernelError as error:
        raise click.ClickException(str(error)) from None
    click.echo(str(path))
