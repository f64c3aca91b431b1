"""The ``seq2seq`` task: ``tagpipe train --task seq2seq``, ``tagpipe evaluate`` and ``tagpipe annotate``
for UniLM seq2seq models (``plugins/seq2seq/model.py``).

- train: the common options mapped onto :func:`tagpipe.plugins.seq2seq.model.train_seq2seq`, plus
  ``--max-source-length`` / ``--max-target-length``; ``--format jsonl`` (``source``/``target``
  pairs), ``webnlg-text2triples`` or ``webnlg-triples2text`` (a WebNLG file, either way).
- evaluate: greedy generation for every source; corpus BLEU (sacrebleu, when installed) of the
  generations against the targets, and, when every target is linearised triples, triple
  P/R/F1 of the generations parsed back (:func:`score_generations`).
- annotate: ``tagpipe_seq2seq`` on each document's text; each record gets ``generated``.

Only click is imported at module level.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from tagpipe.errors import TagpipeError
from tagpipe.plugins.seq2seq.names import EXTENSION
from tagpipe.tasks import Options, Task, extension_value, set_threads, single_process

#: the common ``train`` options this task takes (besides its own)
COMMON = ("task", "train", "dev", "output", "format_", "pretrained", "epochs", "batch_size", "lr", "seed", "device",
          "threads", "quiet")
TRAINING = ("epochs", "batch_size", "lr", "seed", "max_source_length", "max_target_length")  # train_seq2seq's


class Seq2SeqTask(Task):
    """Text generation by one BERT-family masked LM under the UniLM attention mask."""

    name = "seq2seq"
    spacy_factory = "tagpipe_seq2seq"
    spacy_module = "tagpipe.plugins.seq2seq.spacy_component"
    train_options = (
        click.Option(["--max-source-length"], type=int, default=None,
                     help="seq2seq: source subwords at most, [CLS] and [SEP] included [default: 128]."),
        click.Option(["--max-target-length"], type=int, default=None,
                     help="seq2seq: target subwords at most, the final [SEP] included [default: 64]."),
    )

    def train(self, options: Options) -> None:
        options.check(self.name, {*COMMON, *(o.name for o in self.train_options)})
        single_process(self.name)
        if options.get("pretrained") is None:
            raise TagpipeError("--task seq2seq needs --pretrained (a local BERT-family folder)")
        from tagpipe.devices import resolve_device
        from tagpipe.plugins.seq2seq.model import train_seq2seq

        set_threads(options.get("threads"))
        output = options.get("output", "models/seq2seq")
        quiet = bool(options.get("quiet"))
        history = train_seq2seq(train=options.values["train"], dev=options.get("dev"), output=output,
                                pretrained=options.values["pretrained"], format=options.get("format_", "jsonl"),
                                device=str(resolve_device(options.get("device", "auto"))),
                                log=(lambda _m: None) if quiet else (lambda m: click.echo(m, err=True)),
                                **{k: options.values[k] for k in TRAINING if k in options.given})
        dev = f", best dev loss {min(history['dev_loss']):.4f}" if history["dev_loss"] else ""
        click.echo(f"model in {output} (final train loss {history['train_loss'][-1]:.4f}{dev})")

    def evaluate(self, corpus: str, model: Path, options: Options) -> dict[str, Any]:
        options.check(self.name, ("format_", "batch_size", "device", "threads", "quiet"))
        from tagpipe.devices import resolve_device
        from tagpipe.plugins.seq2seq.model import Seq2SeqModel, load_pairs

        set_threads(options.get("threads"))
        pairs = load_pairs(corpus, options.get("format_", "jsonl"))
        loaded = Seq2SeqModel.load(model, device=str(resolve_device(options.get("device", "auto"))))
        return score_generations(loaded, pairs, batch_size=options.get("batch_size", 16))

    def format_scores(self, scores: dict[str, Any]) -> str:
        lines = [f"{scores['pairs']} pairs, {scores['pairs_per_s']:.1f} generated per second"]
        if scores["bleu"] is None:
            lines.append(f"BLEU: {scores['bleu_signature']}")
        else:
            lines.append(f"BLEU {scores['bleu']:.2f}  ({scores['bleu_signature']})")
        if "f1" in scores:
            lines.append(f"triples: {scores['gold']} gold, {scores['predicted']} generated; precision "
                         f"{scores['precision'] * 100:.2f}  recall {scores['recall'] * 100:.2f}  "
                         f"F1 {scores['f1'] * 100:.2f}")
        return "\n".join(lines)

    def record_fields(self, doc: Any) -> dict[str, Any]:
        generated = extension_value(doc, EXTENSION)
        return {} if generated is None else {"generated": generated}


def score_generations(model: Any, pairs: Sequence[dict[str, Any]], batch_size: int = 16) -> dict[str, Any]:
    """Greedy generations for the pairs' sources, scored against their targets.

    ``bleu``: sacrebleu's corpus BLEU (0-100, its convention), case-insensitive when the model's
    tokenizer lower-cases (it cannot write capitals), ``None`` without sacrebleu;
    ``bleu_signature`` says how it was computed. When every target is linearised triples:
    ``precision``, ``recall``, ``f1`` (fractions), ``correct``, ``predicted``, ``gold`` of the
    generated triples against the targets' (their subject, relation and object each passed
    through the model's tokenizer and back, so the lower-casing and subword spacing it imposes
    cost nothing, while what it cannot write at all still counts as a miss)."""
    from tagpipe.corpora.webnlg import is_linearised, parse_linearised
    from tagpipe.evaluation import exact_match_scores

    sources, targets = [p["source"] for p in pairs], [p["target"] for p in pairs]
    started = time.perf_counter()
    generated = model.generate(sources, batch_size=batch_size)
    seconds = time.perf_counter() - started
    result: dict[str, Any] = {"pairs": len(pairs), "pairs_per_s": len(pairs) / max(seconds, 1e-9),
                              **corpus_bleu(generated, targets, lowercase=_normalise(model, ["A"]) == ["a"])}
    if any(t.strip() for t in targets) and all(is_linearised(t) for t in targets if t.strip()):
        gold = [parse_linearised(t) for t in targets]
        parts = iter(_normalise(model, [part for triples in gold for t in triples for part in t]))
        gold = [[(next(parts), next(parts), next(parts)) for _ in triples] for triples in gold]
        result.update(exact_match_scores(gold, [parse_linearised(g) for g in generated]))
    return result


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[str], *, lowercase: bool) -> dict[str, Any]:
    """``{"bleu", "bleu_signature"}``: sacrebleu's corpus BLEU with one reference per hypothesis."""
    try:
        from sacrebleu.metrics import BLEU
    except ImportError:
        return {"bleu": None, "bleu_signature": "not computed: sacrebleu is not installed (pip install sacrebleu)"}
    metric = BLEU(lowercase=lowercase)
    score = metric.corpus_score(list(hypotheses), [list(references)])
    return {"bleu": score.score, "bleu_signature": str(metric.get_signature())}


def _normalise(model: Any, texts: list[str]) -> list[str]:
    """``texts`` as the model would write them: encoded by its tokenizer and decoded again."""
    if not texts:
        return []
    return [model.decode_ids(ids) for ids in model.tokenizer(texts, add_special_tokens=False)["input_ids"]]
