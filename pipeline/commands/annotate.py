"""``tagpipe annotate``: run a model over a corpus, streaming, one JSON record per document."""

from __future__ import annotations

import json
import sys
import time

import click


@click.command()
@click.argument("input_path", metavar="INPUT")
@click.option("--model", "-m", "model_path", default=None, help="Model folder (default: the embedded model).")
@click.option("--output", "-o", default="-", show_default=True, help="Output JSONL file (written atomically).")
@click.option("--format", "format_", default=None, help="Input format (default: from the extension; text otherwise).")
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--device", default="cpu", show_default=True)
@click.option("--strict", is_flag=True, help="Stop at the first bad input line instead of skipping it.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or summary.")
def annotate(input_path: str, model_path: str | None, output: str, format_: str | None, batch_size: int,
             device: str, strict: bool, quiet: bool) -> None:
    """Annotate INPUT (text: one document per line; JSONL with a "text" field; '-' for stdin)."""
    from corpora.io import atomic_write, detect_format
    from pipeline.data import read_corpus
    from pipeline.errors import CorpusError
    from pipeline.predict import Predictor

    fmt = format_ or (detect_format(input_path) if input_path != "-" else "text")
    predictor = Predictor.load(model_path, device=device, batch_size=batch_size)
    skipped: list[CorpusError] = []

    def on_error(error: CorpusError) -> None:
        if strict:
            raise error
        skipped.append(error)
        click.echo(f"warning: skipped {error}", err=True)

    def items():
        from spacy.tokens import Doc

        for n, sentence in enumerate(read_corpus(input_path, fmt, on_error=on_error), 1):
            doc_id = sentence.id if sentence.id is not None else (sentence.line or n)
            if sentence.tokens and sentence.text is None:
                content = Doc(predictor.nlp.vocab, words=sentence.tokens, spaces=sentence.spaces)
            else:
                content = sentence.text or ""
            yield _as_int(doc_id), content, sentence.extra

    started = time.perf_counter()
    docs = tokens = 0
    records = predictor.stream(items(), batch_size=batch_size)
    bar = None
    if not quiet:
        from tqdm import tqdm

        records = bar = tqdm(records, unit="doc", desc="annotate", file=sys.stderr, dynamic_ncols=True)
    with atomic_write(output) as out:
        for record in records:
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
            docs += 1
            tokens += len(record["tokens"])
            if bar is not None and docs % 200 == 0:
                bar.set_postfix(tokens_s=f"{tokens / (time.perf_counter() - started):.0f}", refresh=False)
    if not quiet:
        seconds = time.perf_counter() - started
        click.echo(f"annotated {docs} documents ({tokens} tokens) in {seconds:.1f} s: {docs / seconds:.0f} docs/s, "
                   f"{tokens / seconds:.0f} tokens/s; {len(skipped)} bad lines skipped", err=True)


def _as_int(value):
    return int(value) if isinstance(value, str) and value.isdigit() else value
