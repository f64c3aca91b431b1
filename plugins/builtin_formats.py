"""Builtin corpus formats, registered through the same hook as any third-party plugin.

Formats are registered as classes (``"module:attribute"`` strings, imported on first use);
callers instantiate them with no arguments.
"""

from pipeline import hookimpl


@hookimpl
def register_formats(register):
    register("conll", "corpora.conll:ConllFormat")
    register("conllu", "corpora.conllu:ConlluFormat")
    register("jsonl", "corpora.jsonl:JsonlFormat")
    register("text", "corpora.text:TextFormat")
