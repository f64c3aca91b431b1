"""The Perturbed Masking plugin: adds ``tagpipe parse`` and ``tagpipe segment``.

Its spaCy components (``tagpipe_pm_parser``, ``tagpipe_pm_segmenter``) come through the
``spacy_factories`` entry points to :mod:`tagpipe.plugins.perturbed_masking.spacy_components`, not through a hook.
"""

from __future__ import annotations

from tagpipe import hookimpl


@hookimpl
def register_commands(cli) -> None:
    # pm_cli imports only click; torch and transformers wait for the commands to run
    from tagpipe.plugins.perturbed_masking.cli import parse, segment

    cli.add_command(parse)
    cli.add_command(segment)
