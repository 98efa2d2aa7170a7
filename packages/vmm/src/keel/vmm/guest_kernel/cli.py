"""Click commands `build-kernel` and `build-initramfs` for `keel vmm guest`.

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


@click.command("build-initramfs")
@click.option("--init", "init_path", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The program or script to run as /init.")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where to write the .cpio.gz (default: the cache).")
@click.option("--no-busybox", is_flag=True, help="Leave busybox out (just /init).")
@click.option("--busybox", "busybox_path", default=str(BUSYBOX_PATH), show_default=True,
              type=click.Path(dir_okay=False, path_type=Path), help="A static busybox.")
def build_initramfs_command(init_path: Path, output: Path | None, no_busybox: bool,
                            busybox_path: Path) -> None:
    """Build a gzip'd newc initramfs: busybox-static and its applets, plus your /init."""
    try:
        path = build_initramfs(init_path, busybox=None if no_busybox else busybox_path,
                               output=output)
    except GuestKernelError as error:
        raise click.ClickException(str(error)) from None
    click.echo(str(path))
