"""``tagpipe info``: versions and the embedded default model's path."""

from __future__ import annotations

import click


@click.command()
def info() -> None:
    """Print versions and where the embedded default model is."""
    from importlib.metadata import PackageNotFoundError, version

    from tagpipe.defaults import default_model_path
    from tagpipe.errors import ModelError

    try:
        ours = version("tagpipe")
    except PackageNotFoundError:
        ours = "not installed (source checkout)"
    click.echo(f"tagpipe {ours}")
    try:
        click.echo(f"default model: {default_model_path()}")
    except ModelError as exc:
        click.echo(f"default model: missing ({exc})")
