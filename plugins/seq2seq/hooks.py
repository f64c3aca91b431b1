"""The seq2seq plugin: the ``seq2seq`` task (``tagpipe train --task seq2seq``, ``evaluate`` and
``annotate`` of its models), ``tagpipe generate`` and ``tagpipe seq2seq-train``.

Its spaCy component (``tagpipe_seq2seq``) comes through the ``spacy_factories`` entry point to
:mod:`tagpipe.plugins.seq2seq.spacy_component`, not through a hook.
"""

from __future__ import annotations

from tagpipe import hookimpl


@hookimpl
def register_tasks(register) -> None:
    register("seq2seq", "tagpipe.plugins.seq2seq.task:Seq2SeqTask")


@hookimpl
def register_commands(cli) -> None:
    # seq2seq_cli imports only click; torch and transformers wait for the commands to run
    from tagpipe.plugins.seq2seq.cli import generate, seq2seq_train

    cli.add_command(generate)
    cli.add_command(seq2seq_train)
