"""The ``tagpipe`` command line (also ``python cli.py``).

Commands live in ``pipeline/commands/``; plugins add theirs through the ``register_commands``
hook, builtin plugins first, and none may take a command name already taken (a builtin's first of
all). Errors a user can act on print as one line on stderr and exit 1, never a traceback; so does any
other exception (``error: Type: message``), unless ``TAGPIPE_TRACEBACK=1`` asks for the traceback.
"""

from __future__ import annotations

import errno
import os
import sys
from typing import Any

import click

from tagpipe.errors import TagpipeError


class TagpipeGroup(click.Group):
    """A click group that loads plugin commands lazily and turns our errors into one line."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._loaded_from: object | None = None  # the plugin manager whose commands are loaded
        self._loading: str | None = None  # the plugin whose register_commands is running
        self._plugin_commands: dict[str, str] = {}  # command name -> plugin that added it

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        """click replaces a command of the same name silently: refuse a plugin's instead, by name."""
        name = name or cmd.name
        plugin = self._loading
        if plugin is not None and name in self.commands:
            owner = self._plugin_commands.get(name)
            by = f"plugin {owner!r}" if owner else "tagpipe"
            click.echo(f"warning: command {name!r} from plugin {plugin!r} refused: already registered by {by}",
                       err=True)
            return
        super().add_command(cmd, name)
        if plugin is not None and name is not None:
            self._plugin_commands[name] = plugin

    def _load_plugin_commands(self) -> None:
        from tagpipe.host import get_plugin_manager, hookimpls_in_order, one_line

        pm = get_plugin_manager()
        if self._loaded_from is pm:
            return
        for name in self._plugin_commands:  # the host was reset (tests): drop the old manager's commands
            self.commands.pop(name, None)
        self._plugin_commands.clear()
        self._loaded_from = pm
        # one plugin at a time, builtins first, so a raising hook is named, the other plugins' commands
        # still load, and no plugin takes a builtin's command name whatever its tryfirst/trylast
        for impl in hookimpls_in_order(pm, "register_commands"):
            self._loading = impl.plugin_name
            try:
                impl.function(cli=self)
            except SystemExit:
                click.echo(f"warning: plugin {impl.plugin_name!r}: register_commands called sys.exit()", err=True)
            except Exception as exc:  # noqa: BLE001 - a broken plugin must not take the CLI down
                click.echo(f"warning: plugin {impl.plugin_name!r}: register_commands failed: {one_line(exc)}",
                           err=True)
            finally:
                self._loading = None

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._load_plugin_commands()
        return super().list_commands(ctx)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None or cmd_name in self._plugin_commands:  # a plugin's: maybe of a manager since reset
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
            raise click.ClickException(" ".join(str(exc).split())) from None
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise  # click prints these itself
        except Exception as exc:
            if os.environ.get("TAGPIPE_TRACEBACK") == "1" or getattr(exc, "errno", None) == errno.EPIPE:
                raise  # the traceback on request; a closed pipe (| head) click ends quietly
            message = " ".join(str(exc).split())
            click.echo(f"error: {type(exc).__name__}{': ' + message if message else ''} "
                       "(set TAGPIPE_TRACEBACK=1 for the traceback)", err=True)
            sys.exit(1)


@click.group(cls=TagpipeGroup, invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tagpipe", message="tagpipe %(version)s")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """tagpipe: plugin-based sequence labelling (BiLSTM/BERT encoders, CRF/MEMM decoders) for spaCy.

    Every command spells the shared options the same way: --device (default auto), --threads
    (default: torch's), --json (one object on stdout, scores as fractions) and -q/--quiet (no
    progress bar on stderr)."""
    if ctx.invoked_subcommand is None:  # `tagpipe` alone: the help, not a usage error
        click.echo(ctx.get_help())


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
