"""The seq2seq plugin: the ``seq2seq`` task (``tagpipe train --task seq2seq``, ``evaluate`` and
``annotate`` of its models), ``tagpipe generate`` and ``tagpipe seq2seq-train``.

Its spaCy component (``tagpipe_seq2seq``) comes through the ``spacy_factories`` entry point to
:mod:`plugins.seq2seq_spacy`, not through a hook.
"""

from __future__ import annotations

from pipeline import hookimpl


@hookimpl
def register_tasks(register) -> None:
    register("seq2seq", "plugins.seq2seq_task:Seq2SeqTask")


@hookimpl
def register_commands(cli) -> None:
    # seq2seq_cli imports only click; torch and transformers wait for the commands to run
    from plugins.seq2seq_cli import generate, seq2seq_train

    cli.add_command(generate)
    cli.add_command(seq2seq_train)
