"""Builtin tasks, registered through the same hook as any third-party plugin's: the taggers.

Tasks are registered as classes (``"module:attribute"`` strings, imported on first use); callers
instantiate them with no arguments.
"""

from pipeline import hookimpl


@hookimpl
def register_tasks(register):
    register("ner", "pipeline.tagger_task:NerTask")
    register("tag", "pipeline.tagger_task:TagTask")
