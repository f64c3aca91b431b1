"""Builtin components, each registered through the same hooks as any third-party plugin."""
