"""``tagpipe parse`` and ``tagpipe segment``: Perturbed Masking on a CoNLL-U corpus.

Only click is imported here; torch and transformers load inside the commands, so
registering them keeps ``tagpipe --help`` fast.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import warnings
from pathlib import Path

import click

from tagpipe.commands.options import device_option, json_option, progress, quiet_option, threads_option
from tagpipe.corpora.io import replacing
from tagpipe.errors import TagpipeError
from tagpipe.names import PRECISIONS
from tagpipe.plugins.encoders.names import POOLINGS
from tagpipe.plugins.perturbed_masking.names import ALGORITHMS, DISTANCES, ORIENTATIONS, ROOTS

# kept equal to tagpipe.plugins.perturbed_masking.masking's and pm_protocol's tuples (importing them would load torch)


def _model_options(func):
    """Options shared by both commands: which encoder, which layer, how to measure."""
    options = [
        click.option("--pretrained", required=True, type=click.Path(path_type=Path),
                     help="Local HuggingFace masked-LM folder (config.json, weights, tokenizer.json)."),
        click.option("--layer", type=int, default=-1, show_default=True,
                     help="Layer probed: 1..L, negative from the top (-1 = last)."),
        click.option("--distance", type=click.Choice(DISTANCES), default="euclidean", show_default=True),
        click.option("--pooling", type=click.Choice(POOLINGS), default="first", show_default=True,
                     help="How a multi-subword word's states become one."),
        click.option("--limit", type=int, default=None, help="Only the first N sentences."),
        click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path),
                     help="Write the predictions as CoNLL-U (replaced atomically)."),
        json_option,
        click.option("--plot", type=click.Path(dir_okay=False, path_type=Path),
                     help="Write one sentence's impact matrix as a PNG heatmap."),
        click.option("--plot-sentence", type=int, default=1, show_default=True,
                     help="Which sentence --plot draws (1-based)."),
        device_option,
        threads_option,
        quiet_option,
        click.option("--batch-tokens", type=int, default=16384, show_default=True,
                     help="Subword positions per forward pass (copies x length)."),
        click.option("--precision", type=click.Choice(PRECISIONS), default="fp32", show_default=True,
                     help="bf16/fp16: the encoder under autocast (faster; matrices within ~1% of fp32)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _load(corpus: Path, limit: int | None, device: str, threads: int | None, what: str) -> list:
    """The corpus's sentences (the first ``limit``), after checking ``--device`` and ``--limit`` (and setting
    ``--threads``): a bad option or an empty corpus is one line before the model loads, never a score of 0
    over nothing."""
    from tagpipe.corpora.conllu import read_conllu
    from tagpipe.devices import resolve_device
    from tagpipe.tasks import set_threads

    resolve_device(device)
    set_threads(threads)
    if limit is not None and limit < 1:
        raise TagpipeError(f"--limit {limit}: give at least 1 sentence")
    sentences = read_conllu(corpus)
    sentences = list(itertools.islice(sentences, limit) if limit is not None else sentences)
    if not sentences:
        raise TagpipeError(f"{corpus}: no sentences, nothing to {what}")
    return sentences


def _impact_model(pretrained: Path, layer: int, distance: str, pooling: str, device: str, batch_tokens: int,
                  precision: str):
    from tagpipe.plugins.perturbed_masking.masking import ImpactModel

    return ImpactModel.from_pretrained(pretrained, layer=layer, distance=distance, pooling=pooling, device=device,
                                       batch_tokens=batch_tokens, precision=precision)


@click.command("parse")
@click.argument("corpus", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_model_options
@click.option("--algorithm", type=click.Choice(ALGORITHMS), default="eisner", show_default=True,
              help="eisner: projective; cle: Chu-Liu/Edmonds, non-projective.")
@click.option("--orientation", type=click.Choice(ORIENTATIONS), default="paper", show_default=True,
              help="paper: score(h -> d) = F[d, h]; transposed: F[h, d].")
@click.option("--root", type=click.Choice(ROOTS), default="cls", show_default=True,
              help="Root arcs from the impact on [CLS], or from each word's mean head score.")
@click.option("--gold-root", is_flag=True,
              help="Evaluation protocol (the paper code's default): give the gold root to the parser "
                   "and the baselines.")
def parse(corpus, pretrained, layer, distance, pooling, limit, output, as_json, plot, plot_sentence, device,
          threads, quiet, batch_tokens, precision, algorithm, orientation, root, gold_root):
    """Parse CORPUS (CoNLL-U) with Perturbed Masking and score it against its gold heads.

    Prints UAS (percent) with punctuation excluded and included next to the left- and right-chain
    baselines, which get the same root information as the parser; --json gives them as fractions.
    """
    from tagpipe.plugins.perturbed_masking.protocol import Attachment, is_punct, parse_matrix
    from tagpipe.plugins.perturbed_masking.trees import left_chain, right_chain

    sentences = _load(corpus, limit, device, threads, "parse")
    model = _impact_model(pretrained, layer, distance, pooling, device, batch_tokens, precision)
    matrices = _by_chunks(model, model.matrices, [s.tokens for s in sentences], quiet, "parse")
    scores = {"parser": Attachment(), "left": Attachment(), "right": Attachment()}
    predicted = []
    for sentence, matrix in zip(sentences, matrices, strict=True):
        gold = sentence.heads
        root_word = gold.index(0) + 1 if gold_root and gold and 0 in gold else None
        heads = parse_matrix(matrix, algorithm, orientation, root, root_word)[1:]
        if gold is not None:
            punct = [is_punct(t, u) for t, u in zip(sentence.tokens, sentence.upos or [None] * len(sentence),
                                                    strict=True)]
            scores["parser"].add(heads, gold, punct)
            scores["left"].add(left_chain(len(sentence), root_word)[1:], gold, punct)
            scores["right"].add(right_chain(len(sentence), root_word)[1:], gold, punct)
        extra = {k: v for k, v in sentence.extra.items() if k != "deps"}
        predicted.append(dataclasses.replace(
            sentence, heads=heads, deprels=["root" if h == 0 else "dep" for h in heads], extra=extra))
    if output is not None:
        from tagpipe.corpora.conllu import write_conllu

        write_conllu(predicted, output)
    if plot is not None:
        _plot_one(plot, plot_sentence, sentences, matrices, lambda s: s.tokens)
    protocol = {
        "layer": model.layer, "distance": distance, "pooling": pooling, "algorithm": algorithm,
        "orientation": orientation, "root": "gold" if gold_root else root,
        "punctuation": "uas excludes UPOS PUNCT tokens; uas_with_punct counts every token",
    }
    parser_, left, right = scores["parser"], scores["left"], scores["right"]
    result = {  # fractions, as every --json score (Attachment counts in percent)
        "uas": parser_.uas / 100, "uas_with_punct": parser_.uas_with_punct / 100,
        "left_chain": left.uas / 100, "right_chain": right.uas / 100,
        "left_chain_with_punct": left.uas_with_punct / 100, "right_chain_with_punct": right.uas_with_punct / 100,
        "sentences": len(sentences), "tokens": parser_.total, "protocol": protocol,
    }
    if as_json:
        click.echo(json.dumps(result))
        return
    root_text = "gold root given (evaluation protocol)" if gold_root else f"root from {root}"
    click.echo(f"{len(sentences)} sentences, {parser_.total} tokens ({parser_.total_no_punct} without punctuation)")
    click.echo(f"protocol: layer {model.layer}, {distance} distance, {pooling} pooling, {algorithm}, "
               f"orientation {orientation}, {root_text}")
    click.echo(f"UAS (punctuation excluded): {parser_.uas:.2f}   (punctuation included): {parser_.uas_with_punct:.2f}")
    click.echo(f"left-chain baseline:  {left.uas:.2f}   (punctuation included): {left.uas_with_punct:.2f}")
    click.echo(f"right-chain baseline: {right.uas:.2f}   (punctuation included): {right.uas_with_punct:.2f}")


@click.command("segment")
@click.argument("corpus", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_model_options
@click.option("--threshold", type=float, default=None,
              help="Cut between adjacent characters whose impact is below this (default: the sentence mean).")
def segment(corpus, pretrained, layer, distance, pooling, limit, output, as_json, plot, plot_sentence, device,
            threads, quiet, batch_tokens, precision, threshold):
    """Segment CORPUS's text into words and score it against its gold words (P/R/F1: percent; --json:
    fractions).

    The input of each sentence is its gold words joined without spaces, split into
    characters; the gold words are only used for scoring.
    """
    from tagpipe.corpora.types import Sentence
    from tagpipe.plugins.perturbed_masking.protocol import boundary_scores, segmentation_counts, split_units

    sentences = _load(corpus, limit, device, threads, "segment")
    model = _impact_model(pretrained, layer, distance, pooling, device, batch_tokens, precision)
    units = [[c for c in "".join(s.tokens) if not c.isspace()] for s in sentences]
    impacts = _by_chunks(model, model.adjacent_impacts, units, quiet, "segment")
    correct = n_pred = n_gold = 0
    predicted = []
    for sentence, chars, impact in zip(sentences, units, impacts, strict=True):
        words = split_units(chars, boundary_scores(impact), threshold)
        c, p, g = segmentation_counts(words, [t for t in sentence.tokens if t.strip()])
        correct, n_pred, n_gold = correct + c, n_pred + p, n_gold + g
        predicted.append(Sentence(tokens=words, id=sentence.id, text=sentence.text))
    if output is not None:
        from tagpipe.corpora.conllu import write_conllu

        write_conllu(predicted, output)
    if plot is not None:
        k = min(max(plot_sentence, 1), len(units)) - 1
        _plot_one(plot, 1, [units[k]], model.matrices([units[k]]), lambda s: s)
    precision = correct / max(n_pred, 1)
    recall = correct / max(n_gold, 1)
    f1 = 2 * precision * recall / max(precision + recall, 1e-12)
    result = {"precision": precision, "recall": recall, "f1": f1, "sentences": len(sentences),
              "gold_words": n_gold, "predicted_words": n_pred,
              "protocol": {"layer": model.layer, "distance": distance, "pooling": pooling,
                           "threshold": "sentence mean" if threshold is None else threshold}}
    if as_json:
        click.echo(json.dumps(result))
        return
    click.echo(f"{len(sentences)} sentences, {n_gold} gold words, {n_pred} predicted")
    click.echo(f"precision {precision * 100:.2f}  recall {recall * 100:.2f}  F1 {f1 * 100:.2f}")


def _by_chunks(model, run, units: list, quiet: bool, desc: str) -> list:
    """``run(units)`` (the model's ``matrices`` or ``adjacent_impacts``) under a progress bar, chunk by chunk:
    the same length-sorted chunks the model makes itself (each already sorted, it keeps their order), so
    the results are identical to one call's."""
    order = sorted(range(len(units)), key=lambda k: len(units[k]))
    size = model.chunk_sentences
    chunks = [order[start:start + size] for start in range(0, len(order), size)]
    results: list = [None] * len(units)
    for chunk in progress(chunks, quiet=quiet, desc=desc, total=len(units), size=len):
        for k, result in zip(chunk, run([units[k] for k in chunk]), strict=True):
            results[k] = result
    return results


def _plot_one(path: Path, which: int, sentences, matrices, words_of) -> None:
    if not sentences:
        return
    k = min(max(which, 1), len(sentences)) - 1
    plot_matrix(matrices[k], ["[CLS]", *words_of(sentences[k])], path)


def plot_matrix(matrix, labels: list[str], path: Path) -> None:
    """Write ``matrix`` ``[n + 1, n + 1]`` as a PNG heatmap (rows: i, columns: j of F[i, j])."""
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    size = max(4.0, 0.3 * len(labels))
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(np.asarray(matrix, dtype=float), cmap="viridis")
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.set_xlabel("j (masked second)")
    ax.set_ylabel("i (word read)")
    fig.colorbar(image, ax=ax, label="F[i, j]")
    path = Path(path)
    try:
        with warnings.catch_warnings(), replacing(path) as tmp:
            # labels in scripts the default font lacks (CJK) draw as boxes
            warnings.filterwarnings("ignore", message="Glyph .* missing from font")
            fig.tight_layout()
            fig.savefig(tmp, format="png", dpi=100)
    finally:
        plt.close(fig)
