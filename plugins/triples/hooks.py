"""The relation-triple plugin: the ``webnlg`` corpus format, the ``triples`` task (``tagpipe train
--task triples``, ``evaluate`` and ``annotate`` of its models) and the older ``tagpipe triples-train`` /
``tagpipe triples-evaluate``.

Its spaCy component (``tagpipe_triples``) comes through the ``spacy_factories`` entry point to
:mod:`tagpipe.plugins.triples.spacy_component`, not through a hook. Nothing heavy is imported here.
"""

from __future__ import annotations

from tagpipe import hookimpl


@hookimpl
def register_formats(register) -> None:
    register("webnlg", "tagpipe.corpora.webnlg:WebNLGFormat")


@hookimpl
def register_tasks(register) -> None:
    register("triples", "tagpipe.plugins.triples.task:TriplesTask")


@hookimpl
def register_commands(cli) -> None:
    # triples_train imports only click at module level; torch waits for the commands to run
    from tagpipe.plugins.triples.training import triples_evaluate, triples_train

    cli.add_command(triples_train)
    cli.add_command(triples_evaluate)
