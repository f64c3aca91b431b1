"""The multi-task plugin: the ``multi`` task (one encoder, several heads, task weighting), registered
through the same hook as any plugin's task. Its spaCy component (``tagpipe_multi``) comes through the
``spacy_factories`` entry point to :mod:`tagpipe.plugins.multitask.spacy_component`. Nothing heavy is
imported here."""

from tagpipe import hookimpl


@hookimpl
def register_tasks(register) -> None:
    register("multi", "tagpipe.plugins.multitask.task:MultiTask")
