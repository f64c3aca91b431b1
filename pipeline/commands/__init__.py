"""Builtin CLI commands, one module each; heavy imports happen inside the command bodies."""

from __future__ import annotations

import click

from tagpipe.commands.annotate import annotate
from tagpipe.commands.compare import compare
from tagpipe.commands.evaluate import evaluate
from tagpipe.commands.info import info
from tagpipe.commands.plugin_commands import plugins
from tagpipe.commands.train import train

COMMANDS: list[click.Command] = [train, evaluate, annotate, compare, info, plugins]
