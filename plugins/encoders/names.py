"""Choices of the encoders shared with other plugins, importable without torch."""

from __future__ import annotations

#: how a word's vector is made from its subwords' vectors
POOLINGS = ("first", "mean", "max")
