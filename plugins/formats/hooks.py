"""Builtin corpus formats, registered through the same hook as any third-party plugin.

Formats are registered as classes (``"module:attribute"`` strings, imported on first use);
callers instantiate them with no arguments.
"""

from tagpipe import hookimpl


@hookimpl
def register_formats(register):
    register("conll", "tagpipe.corpora.conll:ConllFormat")
    register("conllu", "tagpipe.corpora.conllu:ConlluFormat")
    register("jsonl", "tagpipe.corpora.jsonl:JsonlFormat")
    register("text", "tagpipe.corpora.text:TextFormat")
