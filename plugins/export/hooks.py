"""The export plugin: adds ``tagpipe export MODEL --to hf|onnx OUT``."""

from __future__ import annotations

from tagpipe import hookimpl


@hookimpl
def register_commands(cli) -> None:
    # the command module imports only click; torch, transformers and onnx wait for the command to run
    from tagpipe.plugins.export.cli import export

    cli.add_command(export)
