"""The triples plugin's shared names, importable without torch or spaCy."""

from __future__ import annotations

#: ``Doc._.tagpipe_triples``: the (subject, relation, object) triples extracted from a doc
EXTENSION = "tagpipe_triples"
