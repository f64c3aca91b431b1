"""Builtin CLI commands, one module each; heavy imports happen inside the command bodies."""

from __future__ import annotations

import click

COMMANDS: list[click.Command] = []
