"""The builtin tasks ``ner`` and ``tag``: taggers (``tagpipe.model.Tagger``), registered by
``plugins/tagging/hooks.py`` like any plugin's task.

``tagpipe train`` trains them with :class:`tagpipe.training.loop.Trainer` (every ``train`` option is
theirs; ``docs/training.md``), ``tagpipe evaluate`` scores them with seqeval (strict IOB2 entity
P/R/F1, fractions) or token accuracy, and ``annotate`` runs them as ``tagpipe_ner`` /
``tagpipe_tagger``, whose entities are the record's ``entities`` and whose tags its ``tags`` (and the
tag column of annotate's CoNLL output); ``evaluate`` reads the tag column the model was trained on
unless ``--tag-column`` says otherwise.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

import click

from tagpipe.errors import TagpipeError
from tagpipe.tasks import Options, Task, extension_value, set_threads

#: ``--config`` keys for which ``train`` has no flag
CONFIG_ONLY = ("encoder_config", "decoder_config", "warmup", "lr_final", "clip", "weight_decay")


def check_language(lang: str) -> None:
    """``--lang`` must be a language spaCy can tokenise, checked before training (annotate needs it later)."""
    from spacy.util import get_lang_class

    try:
        get_lang_class(lang)
    except Exception:  # noqa: BLE001 - spaCy raises ImportError or its own error for an unknown code
        raise TagpipeError(f"--lang {lang!r}: spaCy has no such language (e.g. en, de, zh, xx)") from None


class TaggerTask(Task):
    """What ``ner`` and ``tag`` share: one model class, one trainer, one evaluation."""

    spacy_module = "tagpipe.spacy_bridge.factories"

    def train(self, options: Options) -> None:
        from tagpipe.data import parse_column
        from tagpipe.training.distributed import exit_launched_process, is_main
        from tagpipe.training.loop import Trainer
        from tagpipe.training.settings import TrainSettings

        values = options.values
        check_language(values["lang"])
        # other --config keys are passed over, as they always were for taggers
        options.check(self.name, set(values) - _task_options(), CONFIG_ONLY + tuple(options.extra))
        known = {f.name for f in fields(TrainSettings)}
        settings = TrainSettings.from_dict({**{k: v for k, v in values.items() if k in known},
                                            **{k: v for k, v in options.extra.items() if k in CONFIG_ONLY},
                                            "format": values["format_"],
                                            "tag_column": parse_column(values["tag_column"])})
        result = Trainer(settings, resume=values["resume"], log=click.echo, progress=not values["quiet"]).run()
        best = result["best"]
        if is_main() and settings.dev:
            click.echo(f"best dev score {best['f1'] * 100:.2f} at epoch {best['epoch']}; model in {settings.output}")
        elif is_main():  # no dev set, no dev score: the kept epoch is the one with the lowest training loss
            click.echo(f"no --dev: kept epoch {best['epoch']} (lowest training loss {-best['f1']:.4f}); "
                       f"model in {settings.output}")
        exit_launched_process()

    def evaluate(self, corpus: str, model: Path, options: Options) -> dict[str, Any]:
        from tagpipe.corpora.schemes import convert
        from tagpipe.data import labelled_sentences, parse_column
        from tagpipe.devices import resolve_device
        from tagpipe.evaluation import entity_scores, token_accuracy
        from tagpipe.model import Tagger

        values = options.values
        set_threads(values.get("threads"))
        tagger = Tagger.load(model, device=resolve_device(values["device"]))
        fmt = values["format_"] or "conll"
        column = parse_column(values["tag_column"])
        trained = tagger.meta.get("settings") or {}
        if column is None and trained.get("format", "conll") == fmt:
            column = trained.get("tag_column")  # the column the model learnt (--task tag --tag-column 1: POS)
        sentences = labelled_sentences(corpus, fmt, task=tagger.task, scheme=values["scheme"], tag_column=column)
        predicted = _tag_with_progress(tagger, [s.tokens for s in sentences], options.get("batch_size", 128),
                                       quiet=bool(values.get("quiet")))
        gold = [s.tags for s in sentences]
        if tagger.task == "ner":
            return entity_scores(gold, [convert(p, tagger.scheme, "iob2") for p in predicted])
        return token_accuracy(gold, predicted)

    def format_scores(self, scores: dict[str, Any]) -> str:
        from tagpipe.evaluation import format_accuracy_table, format_entity_table

        return format_entity_table(scores) if "per_type" in scores else format_accuracy_table(scores)

    def component_config(self, model: Path, **settings: Any) -> dict[str, Any]:
        return {**super().component_config(model, **settings), "scores": settings.get("scores", True),
                "precision": settings.get("precision", "fp32")}


class NerTask(TaggerTask):
    """Named entities: BIOES inside the model, IOB2 in and out; ``doc.ents`` in spaCy."""

    name = "ner"
    spacy_factory = "tagpipe_ner"

    def component_config(self, model: Path, **settings: Any) -> dict[str, Any]:
        return {**super().component_config(model, **settings), "existing_ents": settings["existing_ents"]}


class TagTask(TaggerTask):
    """One tag per token (POS, ...): ``token.pos_`` / ``token.tag_`` in spaCy, and ``tags`` in the records."""

    name = "tag"
    spacy_factory = "tagpipe_tagger"

    def record_fields(self, doc: Any) -> dict[str, Any]:
        """``tags``: the model's tag of each token (``Doc._.tagpipe_tags``), when a tagging model ran."""
        tags = extension_value(doc, "tagpipe_tags")
        return {} if tags is None else {"tags": list(tags)}


def _task_options() -> set[str]:
    """Names of the ``train`` options other tasks add (a tagger has no use for them)."""
    from tagpipe.tasks import get_task, task_names

    return {o.name for n in task_names() for o in get_task(n).train_options if o.name}


def _tag_with_progress(tagger: Any, sentences: list[list[str]], batch_size: int, *, quiet: bool) -> list[list[str]]:
    """``tagger.tag(sentences)`` batch by batch under a progress bar: the same length-sorted batches
    ``Tagger.tag`` makes (it sorts each already sorted chunk stably), so the tags are identical."""
    from tagpipe.commands.options import progress

    predicted: list[list[str]] = [[] for _ in sentences]
    order = sorted((i for i, s in enumerate(sentences) if len(s)), key=lambda i: len(sentences[i]))
    batches = [order[k:k + batch_size] for k in range(0, len(order), batch_size)]
    for batch in progress(batches, quiet=quiet, desc="evaluate", total=len(order), size=len):
        for i, tags in zip(batch, tagger.tag([sentences[i] for i in batch], batch_size=batch_size), strict=True):
            predicted[i] = tags
    return predicted
