"""The ``multi`` task: ``tagpipe train --task multi --columns ner=3,pos=1,chunk=2``, ``evaluate`` of
every head and ``annotate`` with ``tagpipe_multi`` (docs/training.md, "Multi-task").

- train: the taggers' options (less ``--tag-column``, ``--resume``, ``--average``, ``--precision``,
  ``--compile``, ``--grad-checkpointing`` and torchrun) plus ``--columns``, ``--task-weighting``,
  ``--task-weights``, ``--main-task``, ``--head-decoders`` and ``--private-layers``;
- evaluate: every head on its training column: span P/R/F1 (strict IOB2) or token accuracy;
  ``--json`` gives ``{"heads": {NAME: scores}, "main": NAME}``;
- annotate: one record field per head (a span head: ``[{"start", "end", "label", "text"}]`` with
  character offsets; a tag head: one tag per token), and in CoNLL one column per head, in the order
  of the columns the model learnt.

Only click is imported at module level.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

import click

from tagpipe.errors import TagpipeError
from tagpipe.plugins.multitask.heads import (
    apply_decoders,
    apply_private_layers,
    choose_main,
    parse_columns,
    parse_weights,
)
from tagpipe.tasks import Options, Task, extension_value, set_threads, single_process

WEIGHTING_CHOICES = ("fixed", "parallel", "main-aux")  # weighting.WEIGHTINGS, without importing torch
#: ``train`` options a multi-task run takes, besides its own
COMMON = ("task", "train", "dev", "output", "format_", "scheme", "lang", "encoder", "decoder", "pretrained", "epochs",
          "batch_size", "accumulate", "lr", "encoder_lr", "optimizer", "lr_scaling", "reference_batch_size", "flood",
          "vectors", "patience", "seed", "device", "threads",
          "invalid_tags", "save_dtype", "max_sentence_length", "quiet")
HEADS_EXTENSION = "tagpipe_heads"  # Doc._.tagpipe_heads: {head: its tags, one per token (IOB2 for span heads)}


def config_keys() -> tuple[str, ...]:
    """The ``--config`` keys of the training settings that ``train`` has no flag for (``clip``, ...)."""
    from tagpipe.training.settings import TrainSettings

    return tuple(f.name for f in fields(TrainSettings) if f.metadata.get("flag") is False)


def check_language(lang: str) -> None:
    """``--lang`` must be a language spaCy can tokenise (annotate needs it), checked before training."""
    from spacy.util import get_lang_class

    try:
        get_lang_class(lang)
    except Exception:  # noqa: BLE001 - spaCy raises ImportError or its own error for an unknown code
        raise TagpipeError(f"--lang {lang!r}: spaCy has no such language (e.g. en, de, zh, xx)") from None


class MultiTask(Task):
    """Several tag layers from one encoder (``plugins/multitask/model.py``)."""

    name = "multi"
    spacy_factory = "tagpipe_multi"
    spacy_module = "tagpipe.plugins.multitask.spacy_component"
    train_options = (
        click.Option(["--columns"], default=None,
                     help="multi: heads as NAME=COLUMN[:span|tag],... (CoNLL column from 0 = the word; "
                          "e.g. ner=3,pos=1,chunk=2 for CoNLL-2003). The first is the main task."),
        click.Option(["--task-weighting"], type=click.Choice(WEIGHTING_CHOICES), default=None,
                     help="multi: fixed (sum of weighted losses), parallel (unit-norm task gradients on the "
                          "encoder) or main-aux (conflicting auxiliary gradients projected) [default: fixed]."),
        click.Option(["--task-weights"], default=None, help="multi: NAME=WEIGHT,... (default 1 each)."),
        click.Option(["--main-task"], default=None,
                     help="multi: the head that selects the dev epoch and leads main-aux [default: the first]."),
        click.Option(["--head-decoders"], default=None,
                     help="multi: NAME=DECODER,... for heads whose decoder is not --decoder."),
        click.Option(["--private-layers"], default=None,
                     help="multi: NAME=N,...: N BiLSTM layers of that head's own over the shared encoder "
                          "(e.g. ner=1: the auxiliary heads share the encoder, NER gets a layer of its own)."),
    )

    def plan(self, options: Options):
        """The :class:`TrainSettings` and :class:`MultiPlan` of ``train``'s options, checked."""
        from tagpipe.plugins.multitask.training import MultiPlan
        from tagpipe.training.settings import DECODER_ALIASES, TrainSettings

        own = {o.name for o in self.train_options}
        config_only = config_keys()
        options.check(self.name, {*COMMON, *own}, config_only)
        values = {**options.values, **options.extra}
        if not values.get("columns"):
            raise TagpipeError("--task multi needs --columns, e.g. --columns ner=3,pos=1,chunk=2")
        heads = parse_columns(values["columns"])
        known = {f.name for f in fields(TrainSettings)}
        settings = TrainSettings.from_dict({**{k: v for k, v in values.items() if k in known and k in COMMON},
                                            **{k: v for k, v in options.extra.items() if k in config_only},
                                            "format": values["format_"] or "conll", "task": self.name,
                                            "output": options.get("output", "models/multi")})
        apply_decoders(heads, settings.decoder, values.get("head_decoders"), DECODER_ALIASES)
        for head in heads:
            head.decoder_config = dict(settings.decoder_config) if head.decoder == settings.decoder else {}
        # private layers as wide as the shared BiLSTM, with its dropout (BiLSTM defaults for other encoders)
        hidden, dropout = (settings.encoder_config or {}).get("hidden"), (settings.encoder_config or {}).get("dropout")
        apply_private_layers(heads, values.get("private_layers"),
                             hidden=hidden if isinstance(hidden, int) and hidden > 0 else 200,
                             dropout=float(dropout) if isinstance(dropout, (int, float)) and 0 <= dropout < 1 else 0.25)
        weighting = values.get("task_weighting") or "fixed"
        return settings, MultiPlan(heads, weighting, parse_weights(values.get("task_weights"), heads),
                                   choose_main(heads, values.get("main_task")))

    def train(self, options: Options) -> None:
        from tagpipe.plugins.multitask.training import MultiTrainer

        single_process(self.name)
        settings, plan = self.plan(options)
        check_language(settings.lang)
        result = MultiTrainer(settings, plan, log=click.echo, progress=not options.values.get("quiet")).run()
        best = result["best"]
        what = f"best dev {plan.main} score {best['score'] * 100:.2f} at epoch {best['epoch']}" if settings.dev \
            else f"no --dev: kept epoch {best['epoch']} (lowest training loss)"
        click.echo(f"{what}; model in {settings.output}")

    def evaluate(self, corpus: str, model: Path, options: Options) -> dict[str, Any]:
        from tagpipe.devices import resolve_device
        from tagpipe.plugins.multitask.model import MultiTagger
        from tagpipe.plugins.multitask.training import head_scores, read_examples
        from tagpipe.training.settings import TrainSettings

        options.check(self.name, ("format_", "scheme", "batch_size", "device", "threads", "quiet"))
        set_threads(options.get("threads"))
        tagger = MultiTagger.load(model, device=resolve_device(options.get("device", "auto")))
        trained = tagger.meta.get("settings") or {}
        settings = TrainSettings(format=options.get("format_", trained.get("format", "conll")),
                                 scheme=options.get("scheme", trained.get("scheme", "iob2")),
                                 max_sentence_length=10**9, task=self.name)
        examples = read_examples(corpus, settings, list(tagger.specs.values()))
        scores = head_scores(tagger, examples, batch_size=options.get("batch_size", 128))
        return {"main": tagger.main, "heads": scores}

    def format_scores(self, scores: dict[str, Any]) -> str:
        from tagpipe.evaluation import format_accuracy_table, format_entity_table

        parts = []
        for name, head in scores["heads"].items():
            main = " (main)" if name == scores.get("main") else ""
            table = format_entity_table(head) if "per_type" in head else format_accuracy_table(head)
            parts.append(f"== {name}{main}\n{table}")
        return "\n\n".join(parts)

    def component_config(self, model: Path, **settings: Any) -> dict[str, Any]:
        return {**super().component_config(model, **settings), "precision": settings.get("precision", "fp32")}

    def record_fields(self, doc: Any) -> dict[str, Any]:
        """A field per head: spans with character offsets for span heads, a tag per token for tag heads."""
        from tagpipe.corpora.schemes import tags_to_spans

        heads = extension_value(doc, HEADS_EXTENSION)
        if heads is None:
            return {}
        fields_: dict[str, Any] = {}
        for name, (kind, tags) in heads.items():
            if kind == "tag":
                fields_[name] = list(tags)
                continue
            spans = []
            for start, end, label in tags_to_spans(tags, "iob2"):
                span = doc[start:end]
                spans.append({"start": span.start_char, "end": span.end_char, "label": label, "text": span.text})
            fields_[name] = spans
        return fields_

    def load_model(self, path: Path, *, device: Any = "cpu") -> Any:
        from tagpipe.plugins.multitask.model import MultiTagger

        return MultiTagger.load(path, device=device)
