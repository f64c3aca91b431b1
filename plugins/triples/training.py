"""Training and scoring relation-triple models; ``tagpipe triples-train`` and ``triples-evaluate``,
the older spellings of ``tagpipe train --task triples`` and ``tagpipe evaluate`` (``plugins/triples/task.py``),
which run the same functions.

Only click is imported at module level (the commands are registered on every ``tagpipe`` call);
torch and transformers load inside the functions.

Scoring is exact match on ``(subject string, relation, object string)`` sets per sentence, with
entity strings being the full space-joined words; gold triples whose entity the reader could not
locate still count (as misses), so the score is on the file's triples, not on what we could align.
Precision, recall and F1 are fractions (as for NER), printed as percentages.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import click

from tagpipe.commands.options import device_option, json_option, quiet_option, threads_option

HEAD_CHOICES = ("pointer", "gplinker")  # kept equal to tagpipe.plugins.triples.heads.HEADS (not imported: torch)


@dataclass
class TriplesSettings:
    """What ``triples-train`` takes; ``limit``/``dev_limit`` read only the first N sentences."""

    train: str
    dev: str
    output: str
    pretrained: str
    head: str = "pointer"
    efficient: bool = False  # Efficient GlobalPointer (gplinker only)
    epochs: int = 20
    batch_size: int = 16
    lr: float = 1e-3  # the head
    encoder_lr: float = 5e-5
    weight_decay: float = 0.01
    clip: float = 1.0
    seed: int = 42
    limit: int | None = None
    dev_limit: int | None = None
    device: str = "cpu"
    relations: str | None = None  # rel2id.json; default: the relations seen in the training file
    history: list[dict[str, Any]] = field(default_factory=list)


def read_sentences(path: str | Path, limit: int | None = None, log: Callable[[str], None] | None = None) -> list:
    """WebNLG sentences of ``path`` (the first ``limit``), logging how many triples were not located."""
    import itertools

    from tagpipe.corpora.webnlg import WebNLGStats, read_webnlg

    stats = WebNLGStats()
    sentences = list(itertools.islice(read_webnlg(path, stats), limit))
    if log is not None:
        log(f"{path}: {stats.summary()}")
    return sentences


def gold_triples(sentence) -> list:
    """The located triples of a WebNLG sentence as :class:`tagpipe.plugins.triples.model.SpanTriple`."""
    from tagpipe.plugins.triples.model import SpanTriple

    return [SpanTriple(s0, s1, r, o0, o1) for s0, s1, r, o0, o1 in sentence.extra["triples"]]


def evaluate_model(model, sentences: Sequence, batch_size: int = 32) -> dict:
    """Score ``model`` on WebNLG sentences; adds ``sentences`` and ``sentences_per_s`` (decode speed)."""
    from tagpipe.evaluation import exact_match_scores

    start = time.perf_counter()
    predicted = model.predict([s.tokens for s in sentences], batch_size=batch_size)
    seconds = time.perf_counter() - start
    strings = [[t.strings(s.tokens) for t in p] for s, p in zip(sentences, predicted, strict=True)]
    result = exact_match_scores([map(tuple, s.extra["triple_strings"]) for s in sentences], strings)
    result.update(sentences=len(sentences), sentences_per_s=len(sentences) / max(seconds, 1e-9))
    return result


def train_triples(settings: TriplesSettings, log: Callable[[str], None] = print):
    """Train, keeping the best dev-F1 model in ``settings.output``; returns the best model."""
    import torch

    from tagpipe.corpora.webnlg import read_relations
    from tagpipe.plugins.triples.model import TripleModel

    random.seed(settings.seed)
    torch.manual_seed(settings.seed)
    train = [s for s in read_sentences(settings.train, settings.limit, log) if s.tokens]
    dev = read_sentences(settings.dev, settings.dev_limit, log)
    if settings.relations:
        relations = read_relations(settings.relations)
    else:
        relations = sorted({t[2] for s in train for t in s.extra["triples"]})
    head_config = {"efficient": True} if settings.head == "gplinker" and settings.efficient else {}
    model = TripleModel.build(settings.pretrained, relations, settings.head, head_config).to(settings.device)
    model.meta["settings"] = {k: v for k, v in asdict(settings).items() if k != "history"}
    groups = [{"params": list(model.encoder.parameters()), "lr": settings.encoder_lr},
              {"params": list(model.head.parameters()), "lr": settings.lr}]
    optimizer = torch.optim.AdamW(groups, weight_decay=settings.weight_decay)
    steps = settings.epochs * -(-len(train) // settings.batch_size)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, 1.0 - step / max(steps, 1)))
    best = -1.0
    for epoch in range(1, settings.epochs + 1):
        model.train()
        order = list(range(len(train)))
        random.shuffle(order)
        total, started = 0.0, time.perf_counter()
        for i in range(0, len(order), settings.batch_size):
            batch = [train[k] for k in order[i:i + settings.batch_size]]
            loss = model.loss(model.featurize([s.tokens for s in batch]), [gold_triples(s) for s in batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), settings.clip)
            optimizer.step()
            schedule.step()
            total += float(loss.item()) * len(batch)
        scores = evaluate_model(model, dev, settings.batch_size * 2)
        record = {"epoch": epoch, "loss": total / max(len(train), 1), "dev_f1": scores["f1"],
                  "dev_precision": scores["precision"], "dev_recall": scores["recall"],
                  "seconds": time.perf_counter() - started}
        settings.history.append(record)
        log(json.dumps(record))
        if scores["f1"] > best:
            best = scores["f1"]
            model.meta.update(best_epoch=epoch, dev_f1=best, history=settings.history)
            model.save(settings.output)
    model.meta["history"] = settings.history
    return TripleModel.load(settings.output, device=settings.device)


def run_training(settings: TriplesSettings, *, threads: int | None = None, quiet: bool = False) -> None:
    """Train as the commands do: the epochs' JSON lines on stderr (unless ``quiet``), the summary on stdout."""
    from tagpipe.tasks import set_threads

    set_threads(threads)
    model = train_triples(settings, log=(lambda _line: None) if quiet else (lambda line: click.echo(line, err=True)))
    click.echo(f"best dev F1 {model.meta.get('dev_f1', 0.0) * 100:.2f} (epoch {model.meta.get('best_epoch')}); "
               f"model in {settings.output}")


def evaluate_folder(corpus: str, model_path: str | Path, *, batch_size: int = 32, device: str = "cpu",
                    threads: int | None = None, limit: int | None = None) -> dict[str, Any]:
    """:func:`evaluate_model` of a saved model on a WebNLG file, with the model's ``head``."""
    from tagpipe.plugins.triples.model import TripleModel
    from tagpipe.tasks import set_threads

    set_threads(threads)
    model = TripleModel.load(model_path, device=device)
    result = evaluate_model(model, read_sentences(corpus, limit), batch_size)
    result["head"] = model.head_name
    return result


def format_scores(result: dict[str, Any]) -> str:
    """Two lines for a reader, in percent."""
    return (f"{result['sentences']} sentences, {result['gold']} gold triples, {result['predicted']} predicted "
            f"({result['head']} head)\n"
            f"precision {result['precision'] * 100:.2f}  recall {result['recall'] * 100:.2f}  "
            f"F1 {result['f1'] * 100:.2f}")


@click.command("triples-train")
@click.option("--train", "train_path", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--dev", "dev_path", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--output", "-o", required=True, type=click.Path(file_okay=False), help="Model folder written.")
@click.option("--pretrained", required=True, type=click.Path(exists=True, file_okay=False),
              help="Local HuggingFace encoder folder (config.json, weights, tokenizer.json).")
@click.option("--head", type=click.Choice(HEAD_CHOICES), default="pointer", show_default=True)
@click.option("--efficient", is_flag=True, help="Efficient GlobalPointer (gplinker head).")
@click.option("--relations", type=click.Path(exists=True, dir_okay=False), help="rel2id.json (default: seen ones).")
@click.option("--epochs", type=int, default=20, show_default=True)
@click.option("--batch-size", type=int, default=16, show_default=True)
@click.option("--lr", type=float, default=1e-3, show_default=True, help="Head learning rate.")
@click.option("--encoder-lr", type=float, default=5e-5, show_default=True)
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--limit", type=int, default=None, help="Train on the first N sentences only.")
@click.option("--dev-limit", type=int, default=None, help="Score the first N dev sentences only.")
@device_option
@threads_option
@quiet_option
def triples_train(train_path, dev_path, output, pretrained, head, efficient, relations, epochs, batch_size, lr,
                  encoder_lr, seed, limit, dev_limit, device, threads, quiet):
    """Train a relation-triple model on WebNLG-style JSON (best dev F1 kept in OUTPUT).

    The same as `tagpipe train --task triples`, plus --limit / --dev-limit."""
    from tagpipe.devices import resolve_device

    device = str(resolve_device(device))
    settings = TriplesSettings(train=train_path, dev=dev_path, output=output, pretrained=pretrained, head=head,
                               efficient=efficient, epochs=epochs, batch_size=batch_size, lr=lr,
                               encoder_lr=encoder_lr, seed=seed, limit=limit, dev_limit=dev_limit, device=device,
                               relations=relations)
    run_training(settings, threads=threads, quiet=quiet)


@click.command("triples-evaluate")
@click.argument("corpus", type=click.Path(exists=True, dir_okay=False))
@click.option("--model", "-m", "model_path", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--limit", type=int, default=None, help="Only the first N sentences.")
@device_option
@threads_option
@json_option
def triples_evaluate(corpus, model_path, batch_size, limit, device, threads, as_json):
    """Triple P/R/F1 (exact match on full entity strings) of a model on a WebNLG-style CORPUS.

    The same as `tagpipe evaluate CORPUS -m MODEL`, plus --limit."""
    from tagpipe.devices import resolve_device

    result = evaluate_folder(corpus, model_path, batch_size=batch_size, device=str(resolve_device(device)),
                             threads=threads, limit=limit)
    click.echo(json.dumps(result) if as_json else format_scores(result))
