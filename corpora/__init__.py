"""Corpus readers and writers. Each format is registered through the ``register_formats`` hook."""

from tagpipe.corpora.types import Sentence

__all__ = ["Sentence"]
