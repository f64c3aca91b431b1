"""Builtin tasks, registered through the same hook as any third-party plugin's: the taggers.

Tasks are registered as classes (``"module:attribute"`` strings, imported on first use); callers
instantiate them with no arguments.
"""

from tagpipe import hookimpl


@hookimpl
def register_tasks(register):
    register("ner", "tagpipe.plugins.tagging.task:NerTask")
    register("tag", "tagpipe.plugins.tagging.task:TagTask")
