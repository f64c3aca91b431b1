"""``tagpipe evaluate``: seqeval P/R/F1 (NER) or token accuracy (tagging) of a model on a corpus."""

from __future__ import annotations

import json

import click


@click.command()
@click.argument("corpus")
@click.option("--model", "-m", "model_path", default=None, help="Model folder (default: the embedded model).")
@click.option("--format", "format_", default="conll", show_default=True)
@click.option("--scheme", default="iob2", show_default=True, help="Tagging scheme of the file.")
@click.option("--tag-column", default=None, help="Tag column: CoNLL index (default -1) or CoNLL-U field (upos).")
@click.option("--batch-size", type=int, default=128, show_default=True)
@click.option("--device", default="cpu", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def evaluate(corpus: str, model_path: str | None, format_: str, scheme: str, tag_column: str | None, batch_size: int,
             device: str, as_json: bool) -> None:
    """Score a model on a labelled CORPUS (strict IOB2 entity F1, or token accuracy)."""
    from corpora.schemes import convert
    from pipeline.data import labelled_sentences, parse_column
    from pipeline.defaults import default_model_path
    from pipeline.evaluation import entity_scores, format_accuracy_table, format_entity_table, token_accuracy
    from pipeline.model import Tagger
    from pipeline.training import resolve_device

    model = Tagger.load(model_path or default_model_path(), device=resolve_device(device))
    column = parse_column(tag_column)
    sentences = labelled_sentences(corpus, format_, task=model.task, scheme=scheme, tag_column=column)
    predicted = model.tag([s.tokens for s in sentences], batch_size=batch_size)
    gold = [s.tags for s in sentences]
    if model.task == "ner":
        scores = entity_scores(gold, [convert(p, model.scheme, "iob2") for p in predicted])
        table = format_entity_table(scores)
    else:
        scores = token_accuracy(gold, predicted)
        table = format_accuracy_table(scores)
    click.echo(json.dumps(scores, indent=2) if as_json else table)
