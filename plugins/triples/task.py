"""The ``triples`` task: ``tagpipe train --task triples``, ``tagpipe evaluate`` and ``tagpipe annotate``
for relation-triple models (``plugins/triples/model.py``).

- train: the common options mapped onto :class:`tagpipe.plugins.triples.training.TriplesSettings`, plus
  ``--relations``, ``--head`` and ``--efficient``; ``--config`` may also set ``weight_decay``,
  ``clip``, ``limit`` and ``dev_limit``.
- evaluate: exact-match triple micro P/R/F1 on a WebNLG file (fractions in ``--json``).
- annotate: ``tagpipe_triples``; each record gets ``triples``: ``[{"subject", "relation",
  "object", "subject_span": [start_char, end_char], "object_span": [...]}, ...]``.

Only click is imported at module level.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

import click

from tagpipe.errors import TagpipeError
from tagpipe.plugins.triples.names import EXTENSION
from tagpipe.plugins.triples.training import (
    HEAD_CHOICES,
    TriplesSettings,
    evaluate_folder,
    format_scores,
    run_training,
)
from tagpipe.tasks import Options, Task, extension_value, single_process

#: the common ``train`` options this task takes (besides its own)
COMMON = ("task", "train", "dev", "output", "format_", "pretrained", "epochs", "batch_size", "lr", "encoder_lr",
          "seed", "device", "threads", "quiet")
CONFIG_ONLY = ("weight_decay", "clip", "limit", "dev_limit")
FORMAT = "webnlg"


class TriplesTask(Task):
    """Relation triples (CasRel pointer or GPLinker head on a BERT-family encoder)."""

    name = "triples"
    spacy_factory = "tagpipe_triples"
    spacy_module = "tagpipe.plugins.triples.spacy_component"
    train_options = (
        click.Option(["--relations"], type=click.Path(exists=True, dir_okay=False),
                     help="triples: rel2id.json, every relation the model knows [default: those of --train]."),
        click.Option(["--head"], type=click.Choice(HEAD_CHOICES), default=None,
                     help="triples: pointer (CasRel) or gplinker (GlobalPointer) [default: pointer]."),
        click.Option(["--efficient"], is_flag=True, help="triples: Efficient GlobalPointer (--head gplinker)."),
    )

    def settings(self, options: Options) -> TriplesSettings:
        """:class:`TriplesSettings` from ``train``'s options: what the user gave, this task's defaults
        for the rest (``--output models/triples``, ``--device auto``)."""
        own = {o.name for o in self.train_options}
        options.check(self.name, {*COMMON, *own}, CONFIG_ONLY)
        fmt = options.get("format_", FORMAT)
        if fmt != FORMAT:
            raise TagpipeError(f"--task triples reads --format {FORMAT} (JSON arrays of text and triple_list), "
                               f"not {fmt!r}")
        for name in ("dev", "pretrained"):
            if options.get(name) is None:
                raise TagpipeError(f"--task triples needs {options.flags.get(name, name)}")
        if options.get("efficient") and options.get("head") != "gplinker":
            raise TagpipeError("--efficient is a variant of --head gplinker")
        known = {f.name for f in fields(TriplesSettings)}
        values = {k: options.values[k] for k in options.given if k in known}
        values.setdefault("output", "models/triples")
        values["device"] = _device(options.get("device", "auto"))
        return TriplesSettings(**{**values, **options.extra})

    def train(self, options: Options) -> None:
        single_process(self.name)
        settings = self.settings(options)
        run_training(settings, threads=options.get("threads"), quiet=bool(options.get("quiet")))

    def evaluate(self, corpus: str, model: Path, options: Options) -> dict[str, Any]:
        options.check(self.name, ("format_", "batch_size", "device", "threads", "quiet"))
        if options.get("format_", FORMAT) != FORMAT:
            raise TagpipeError(f"a triples model is evaluated on --format {FORMAT}, not {options.get('format_')!r}")
        return evaluate_folder(corpus, model, batch_size=options.get("batch_size", 32),
                               device=_device(options.get("device", "auto")), threads=options.get("threads"))

    def format_scores(self, scores: dict[str, Any]) -> str:
        return format_scores(scores)

    def record_fields(self, doc: Any) -> dict[str, Any]:
        triples = extension_value(doc, EXTENSION)
        if triples is None:
            return {}
        return {"triples": [{"subject": s.text, "relation": r, "object": o.text,
                             "subject_span": [s.start_char, s.end_char], "object_span": [o.start_char, o.end_char]}
                            for s, r, o in triples]}


def _device(name: str) -> str:
    from tagpipe.devices import resolve_device

    return str(resolve_device(name))
