"""Builtin CLI commands, one module each; heavy imports happen inside the command bodies."""

from __future__ import annotations

import click

from pipeline.commands.annotate import annotate
from pipeline.commands.compare import compare
from pipeline.commands.evaluate import evaluate
from pipeline.commands.info import info
from pipeline.commands.plugins import plugins
from pipeline.commands.train import train

COMMANDS: list[click.Command] = [train, evaluate, annotate, compare, info, plugins]
