"""The `keel` command.

Why an entry-point group: keel-native sits at the bottom of the dependency graph and cannot
import the packages above it, so each installed package contributes its own subcommands
(`keel vmm ...`, `keel http ...`) through the `keel.cli` entry-point group.
"""

from __future__ import annotations

import importlib.metadata
import logging
import sys

import click

from keel.native import __version__

ENTRY_POINT_GROUP = "keel.cli"


class PluginGroup(click.Group):
    """A click group whose subcommands are loaded from entry points on first use."""

    def _entry_points(self) -> dict[str, importlib.metadata.EntryPoint]:
        return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self._entry_points()))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        builtin = super().get_command(ctx, cmd_name)
        if builtin is not None:
            return builtin
        entry_point = self._entry_points().get(cmd_name)
        if entry_point is None:
            return None
        try:
            command = entry_point.load()
        except Exception as error:  # a broken plugin must not break `keel --help`
            message = f"{entry_point.value} could not be loaded: {error}"

            @click.command(cmd_name, help=f"(unavailable: {message})")
            def unavailable() -> None:
                raise click.ClickException(message)

            return unavailable
        if not isinstance(command, click.Command):
            raise click.ClickException(f"{entry_point.value} is not a click command")
        return command


@click.group(cls=PluginGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="keel")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def keel(verbose: int) -> None:
    """keel: a KVM VMM, an io_uring runtime, Go calls and an HTTP framework, in Python.

    Subcommands come from every installed keel package. Start with `keel doctor` to see
    what this host supports.
    """
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def main() -> None:
    """Console entry point."""
    sys.exit(keel.main(prog_name="keel"))
