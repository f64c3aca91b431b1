"""``tagpipe plugins``: what is registered and by whom; ``tagpipe plugins new NAME`` starts a plugin."""

from __future__ import annotations

import json

import click


@click.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts: components, plugins, errors.")
@click.pass_context
def plugins(ctx: click.Context, as_json: bool) -> None:
    """List registered encoders, decoders, formats, tasks and optimizers, and plugin problems (one line each)."""
    if ctx.invoked_subcommand is not None:
        return
    from tagpipe.commands.train import task_options
    from tagpipe.host import get_plugin_manager, get_registry

    pm = get_plugin_manager()
    registry = get_registry()
    task_options(warn=False)  # a task's train option whose name is taken is one of the problems listed
    rows = [{"name": e.name, "kind": e.kind, "plugin": e.plugin, "distribution": pm.distributions.get(e.plugin, "?")}
            for e in registry]
    if as_json:
        loaded = [{"name": name, "distribution": dist} for name, dist in sorted(pm.distributions.items())]
        click.echo(json.dumps({"components": rows, "plugins": loaded, "errors": registry.errors}, indent=2))
        return
    width = max((len(r["name"]) for r in rows), default=4)
    kinds = max((len(r["kind"]) for r in rows), default=4)
    click.echo(f"{'name':<{width}}  {'kind':<{kinds}}  plugin")
    for r in rows:
        click.echo(f"{r['name']:<{width}}  {r['kind']:<{kinds}}  {r['plugin']} ({r['distribution']})")
    for error in registry.errors:
        click.echo(f"warning: {error}", err=True)


@plugins.command()
@click.argument("name")
@click.option("--directory", "-d", default=None, help="Where to write it (default: ./tagpipe-NAME).")
@click.option("--force", is_flag=True, help="Write into a non-empty directory, replacing files of the same name.")
def new(name: str, directory: str | None, force: bool) -> None:
    """Write a plugin package skeleton: setup.cfg with the entry point, hooks, an encoder, a decoder, a test."""
    from tagpipe.scaffold import new_plugin

    target, written = new_plugin(name, directory, force=force)
    for path in written:
        click.echo(f"wrote {path}")
    click.echo(f"next: pip install -e {target} && tagpipe plugins", err=True)
