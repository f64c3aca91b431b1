"""The seq2seq plugin's shared names, importable without torch or spaCy (the CLI needs them at start-up)."""

from __future__ import annotations

#: decoding strategies of :func:`tagpipe.plugins.seq2seq.generation.generate`
STRATEGIES = ("greedy", "beam", "sample")
#: ``Doc._.tagpipe_generated``: the text the component generated for a doc
EXTENSION = "tagpipe_generated"
