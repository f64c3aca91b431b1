"""The ``tagpipe`` command line (also ``python cli.py``).

Commands live in ``pipeline/commands/``; plugins add theirs through the ``register_commands``
hook. Errors a user can act on print as one line on stderr and exit 1, never a traceback.
"""

from __future__ import annotations

import sys

import click
from tagpipe.errors import TagpipeError


class TagpipeGroup(click.Group):
    """A click group that loads plugin commands lazily and turns our errors into one line."""

    _plugins_loaded = False

    def _load_plugin_commands(self) -> None:
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        from tagpipe.host import get_plugin_manager, one_line

        # one plugin at a time, so a raising hook is named and the other plugins' commands still load
        for impl in get_plugin_manager().hook.register_commands.get_hookimpls():
            try:
                impl.function(cli=self)
            except Exception as exc:  # noqa: BLE001 - a broken plugin must not take the CLI down
                click.echo(f"warning: plugin {impl.plugin_name!r}: register_commands failed: {one_line(exc)}",
                           err=True)

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._load_plugin_commands()
        return super().list_commands(ctx)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None:
            self._load_plugin_commands()
            command = super().get_command(ctx, cmd_name)
        return command

    def resolve_command(self, ctx: click.Context, args: list[str]):
        cmd_name, command, rest = super().resolve_command(ctx, args)
        if cmd_name != "plugins" and not ctx.resilient_parsing:
            _warn_about_plugin_problems()
        return cmd_name, command, rest

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except TagpipeError as exc:
            raise click.ClickException(str(exc)) from None
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)


@click.group(cls=TagpipeGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tagpipe", message="tagpipe %(version)s")
def cli() -> None:
    """tagpipe: plugin-based sequence labelling (BiLSTM/BERT encoders, CRF/MEMM decoders) for spaCy."""


def _warn_about_plugin_problems() -> None:
    """One line on stderr when a plugin was refused; ``tagpipe plugins`` shows the details."""
    from tagpipe.host import get_registry

    errors = get_registry().errors
    if errors:
        click.echo(f"warning: {len(errors)} plugin problem(s), see `tagpipe plugins`: {'; '.join(errors)}", err=True)


def _add_builtin_commands() -> None:
    from tagpipe.commands import COMMANDS

    for command in COMMANDS:
        cli.add_command(command)


_add_builtin_commands()


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="tagpipe")


if __name__ == "__main__":
    main()
