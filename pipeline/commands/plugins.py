"""``tagpipe plugins``: every registered component, its kind and the plugin that provided it."""

from __future__ import annotations

import json

import click


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def plugins(as_json: bool) -> None:
    """List registered encoders, decoders and formats, and plugin problems."""
    from pipeline.plugins import get_plugin_manager, get_registry

    pm = get_plugin_manager()
    registry = get_registry()
    rows = [{"name": e.name, "kind": e.kind, "plugin": e.plugin, "distribution": pm.distributions.get(e.plugin, "?")}
            for e in registry]
    if as_json:
        click.echo(json.dumps({"components": rows, "errors": registry.errors}, indent=2))
        return
    width = max((len(r["name"]) for r in rows), default=4)
    click.echo(f"{'name':<{width}}  {'kind':<8}  plugin")
    for r in rows:
        click.echo(f"{r['name']:<{width}}  {r['kind']:<8}  {r['plugin']} ({r['distribution']})")
    for error in registry.errors:
        click.echo(f"warning: {error}", err=True)
