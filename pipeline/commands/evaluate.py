"""``tagpipe evaluate``: score a model on a labelled corpus, as its task scores it (seqeval P/R/F1 for
NER, token accuracy for tagging, a plugin's own metrics for its tasks; ``pipeline/tasks.py``)."""

from __future__ import annotations

import json

import click

from tagpipe.commands.options import device_option, json_option, quiet_option, threads_option


@click.command()
@click.argument("corpus")
@click.option("--model", "-m", "model", default=None,
              help="Model folder, or an embedded model's name: en (the default), zh.")
@click.option("--format", "format_", default=None,
              help="Corpus format [default: conll; webnlg for triples, jsonl for seq2seq].")
@click.option("--scheme", default="iob2", show_default=True, help="Tagging scheme of the file.")
@click.option("--tag-column", default=None, help="Tag column: CoNLL index or CoNLL-U field (default: the column the "
                                                 "model was trained on, for a corpus of its training format; else -1 "
                                                 "or upos).")
@click.option("--batch-size", type=int, default=None, help="Sentences per batch [default: 128; 32 for triples, "
                                                           "16 for seq2seq].")
@device_option
@threads_option
@json_option
@quiet_option
@click.pass_context
def evaluate(ctx: click.Context, corpus: str, model: str | None, as_json: bool, **options) -> None:
    """Score a model on a labelled CORPUS (NER: strict IOB2 entity P/R/F1; tagging: token accuracy;
    triples: exact-match triple P/R/F1; seq2seq: BLEU, and triple P/R/F1 for linearised triples)."""

    from tagpipe.defaults import model_path
    from tagpipe.tasks import Options, task_of

    path = model_path(model)
    task = task_of(path)
    scores = task.evaluate(corpus, path, Options.from_context(ctx, options))
    click.echo(json.dumps(scores, indent=2) if as_json else task.format_scores(scores))
