"""Training a multi-task tagger: the columns of one corpus read per head, one shared encoder pass per
batch, the heads' losses combined by the task weighting (``plugins/multitask/weighting.py``).

The loop is the taggers' (``tagpipe.training.loop``: length-bucketed shuffled batches, gradient
accumulation, warm-up and linear decay, clipping, deterministic kernels, the best dev epoch kept in the
output folder, early stopping) without what a multi-task model does not support yet: ``--resume``,
``--average``, mixed precision, ``torch.compile`` and ``torchrun``. The dev score that selects the
epoch is the main task's (span F1 or accuracy); every head's dev score is kept in the history.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from tagpipe.corpora.schemes import PREFIXES, convert, tags_to_spans
from tagpipe.data import labelled_sentences
from tagpipe.devices import resolve_device
from tagpipe.errors import TagpipeError
from tagpipe.evaluation import entity_scores, token_accuracy
from tagpipe.model import span_labels, to_device
from tagpipe.plugins.multitask.heads import HeadSpec, assign_targets, looks_like_spans
from tagpipe.plugins.multitask.model import MultiTagger
from tagpipe.plugins.multitask.weighting import TaskGradients
from tagpipe.training.loop import (  # the loop's own helpers (flooding, lr scaling, registered optimizers)
    LrScaling,
    build_optimizer,
    deterministic_algorithms,
    flooded,
    length_batches,
    pad_tags,
    seed_everything,
    warmup_then_decay,
)
from tagpipe.training.settings import TrainSettings, check_lengths


@dataclass
class Example:
    """One sentence with every head's gold tags (IOB2 for span heads)."""

    tokens: list[str]
    tags: dict[str, list[str]]


@dataclass
class MultiPlan:
    """What a multi-task run adds to :class:`TrainSettings`: the heads and how their losses combine."""

    heads: list[HeadSpec]
    weighting: str = "fixed"
    weights: dict[str, float] | None = None
    main: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"columns": {h.name: h.column for h in self.heads}, "weighting": self.weighting,
                "weights": self.weights, "main": self.main}


def read_examples(path: str, settings: TrainSettings, heads: Sequence[HeadSpec], *,
                  invalid_counts: dict[str, int] | None = None) -> list[Example]:
    """The sentences of ``path`` with each head's column; a head whose kind is unknown gets it from the
    tags (span when they all look like ``--scheme`` tags). Sentences a span head drops (``--invalid-tags
    drop``) are left out for every head."""
    per_head: dict[str, dict[Any, Any]] = {}
    tokens: dict[Any, list[str]] = {}
    for head in heads:
        if head.kind is None:
            tags = labelled_sentences(path, settings.format, task="tag", tag_column=head.column)
            head.kind = "span" if looks_like_spans([t for s in tags for t in s.tags], PREFIXES[settings.scheme]) \
                else "tag"
        counts: dict[str, int] = {}
        sentences = labelled_sentences(path, settings.format, task="ner" if head.kind == "span" else "tag",
                                       scheme=settings.scheme, tag_column=head.column, invalid=settings.invalid_tags,
                                       counts=counts)
        for key, value in counts.items():
            if invalid_counts is not None:
                invalid_counts[key] = invalid_counts.get(key, 0) + value
        if head is heads[0]:
            check_lengths(sentences, settings.max_sentence_length, path)
        keyed = {(s.source, s.line) if s.line is not None else i: s for i, s in enumerate(sentences)}
        per_head[head.name] = {k: s.tags for k, s in keyed.items()}
        for key, sentence in keyed.items():
            tokens.setdefault(key, sentence.tokens)
    keys = [k for k in tokens if all(k in per_head[h.name] for h in heads)]
    return [Example(tokens[k], {h.name: per_head[h.name][k] for h in heads}) for k in keys]


def head_scores(model: MultiTagger, examples: Sequence[Example], *, batch_size: int = 128) -> dict[str, dict]:
    """Every head's scores on ``examples``: span P/R/F1 or token accuracy (fractions)."""
    predicted = model.tag([e.tokens for e in examples], batch_size=batch_size)
    scores = {}
    for name, spec in model.specs.items():
        gold = [e.tags[name] for e in examples]
        scores[name] = entity_scores(gold, predicted[name]) if spec.kind == "span" \
            else token_accuracy(gold, predicted[name])
    return scores


def main_score(scores: Mapping[str, Any]) -> float:
    """One head's scores as one number: F1 for a span head, accuracy for a tag head."""
    return scores["f1"] if "f1" in scores else scores["accuracy"]


class MultiTrainer:
    """Trains one :class:`MultiTagger` from :class:`TrainSettings` and a :class:`MultiPlan`."""

    def __init__(self, settings: TrainSettings, plan: MultiPlan, *, log: Callable[[str], None] = print,
                 progress: bool = True) -> None:
        self.settings = settings
        self.plan = plan
        self.log = log
        self.progress = progress
        self.device = resolve_device(settings.device)

    def run(self) -> dict[str, Any]:
        self.settings.check_output()
        with deterministic_algorithms():
            return self._run()

    def _run(self) -> dict[str, Any]:
        s, plan = self.settings, self.plan
        if s.threads:
            torch.set_num_threads(s.threads)
        seed_everything(s.seed)
        invalid: dict[str, int] = {}
        train = read_examples(s.train, s, plan.heads, invalid_counts=invalid)
        dev = read_examples(s.dev, s, plan.heads) if s.dev else None
        if invalid.get("repaired") or invalid.get("dropped"):
            self.log(f"{s.train}: span tags that break {s.scheme.upper()}: {invalid}")
        for head in plan.heads:
            gold = [e.tags[head.name] for e in train]
            if head.kind == "span":
                head.labels = span_labels(sorted({t for tags in gold for _, _, t in tags_to_spans(tags, "iob2")}),
                                          "bioes")
            else:
                head.labels = sorted({t for tags in gold for t in tags})
        assign_targets(plan.heads)
        main = plan.main or plan.heads[0].name
        model = MultiTagger.build([e.tokens for e in train], plan.heads, encoder=s.encoder,
                                  encoder_config=s.encoder_config, main=main, lang=s.lang).to(self.device)
        model.meta.update(settings=s.to_dict(), multitask=plan.to_dict())
        ids = {h.name: [[model.label_ids[h.name][t] for t in self._internal(h, e.tags[h.name])] for e in train]
               for h in plan.heads}
        gradients = TaskGradients(list(model.encoder.parameters()),
                                  {n: model.head_parameters(n) for n in model.heads},
                                  plan.weighting, plan.weights, main)
        step_size = s.batch_size * s.accumulate
        scaling = LrScaling.of(s)  # --lr-scaling: the rates follow the global batch, as the taggers'
        model.meta["lr_scaling"] = scaling.record(s.lr, s.encoder_lr)
        optimizer = self._optimizer(model, scaling)
        total_steps = math.ceil(len(train) / step_size) * s.epochs
        schedule = warmup_then_decay(optimizer, total_steps, s.warmup, s.lr_final)  # as the taggers'
        heads = ", ".join(f"{h.name} (column {h.column}, {h.kind}, {len(h.labels)} tags, {h.decoder})"
                          for h in plan.heads)
        self.log(f"training {s.encoder} with heads {heads} on {len(train)} sentences; {plan.weighting} task "
                 f"weighting, main task {main}; {sum(p.numel() for p in model.parameters()):,} parameters, "
                 f"device {self.device}")
        if scaling.message(s.lr, s.encoder_lr):
            self.log(scaling.message(s.lr, s.encoder_lr))
        rng = random.Random(s.seed)
        history: list[dict[str, Any]] = []
        best: dict[str, Any] = {"score": -math.inf, "epoch": 0}
        bad_epochs = 0
        for epoch in range(1, s.epochs + 1):
            if bad_epochs >= s.patience:
                break
            started = time.perf_counter()
            batches = length_batches([len(e.tokens) for e in train], step_size, rng)
            losses = self._epoch(model, train, ids, batches, optimizer, schedule, gradients, epoch)
            seconds = time.perf_counter() - started
            record: dict[str, Any] = {"epoch": epoch, "loss": sum(losses.values()),
                                      "losses": losses, "seconds": round(seconds, 3)}
            if plan.weighting == "main-aux":
                record["projected"] = gradients.conflicts / max(gradients.combined * (len(plan.heads) - 1), 1)
                gradients.conflicts = gradients.combined = 0
            if dev:
                scores = head_scores(model, dev)
                record["dev_score"] = main_score(scores[main])
                record.update({f"dev_{name}_{'f1' if 'f1' in sc else 'accuracy'}": main_score(sc)
                               for name, sc in scores.items()})
                score = record["dev_score"]
            else:
                score = -record["loss"]
            history.append(record)
            if score > best["score"]:
                best, bad_epochs = {"score": score, "epoch": epoch}, 0
                model.meta.update(best_dev=record, history=history)
                model.save(s.output, dtype={"float32": None, "float16": torch.float16,
                                            "bfloat16": torch.bfloat16}[s.save_dtype])
            else:
                bad_epochs += 1
            shown = "  ".join(f"{k[4:]} {v * 100:.2f}" for k, v in record.items()
                              if k.startswith("dev_") and k != "dev_score")
            self.log(f"epoch {epoch}: loss {record['loss']:.4f} ("
                     + ", ".join(f"{n} {v:.4f}" for n, v in losses.items()) + f")  {shown}  {seconds:.1f} s")
        return {"best": best, "history": history}

    @staticmethod
    def _internal(head: HeadSpec, tags: list[str]) -> list[str]:
        return convert(tags, "iob2", "bioes") if head.kind == "span" else tags

    def _epoch(self, model: MultiTagger, train: Sequence[Example], ids: Mapping[str, list[list[int]]],
               batches: list[list[int]], optimizer, schedule, gradients: TaskGradients, epoch: int) -> dict[str, float]:
        """One pass over ``batches`` (optimizer steps); returns each head's mean step loss."""
        s = self.settings
        model.train()
        totals = dict.fromkeys(model.specs, 0.0)
        bar = batches
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(batches, desc=f"epoch {epoch}/{s.epochs}", leave=False, unit="batch", dynamic_ncols=True)
        for batch in bar:
            optimizer.zero_grad(set_to_none=True)
            for start in range(0, len(batch), s.batch_size):
                part = batch[start:start + s.batch_size]
                features = to_device(model.featurize([train[i].tokens for i in part]), self.device)
                tags = {name: pad_tags([ids[name][i] for i in part]).to(self.device) for name in model.specs}
                share = len(part) / len(batch)
                raw = model.losses(features, tags)
                for name, loss in raw.items():
                    if not torch.isfinite(loss):
                        raise TagpipeError(f"epoch {epoch}: the {name} loss became {loss.item()}; lower --lr")
                    totals[name] += loss.item() * share
                # --flood: each head's loss floods on its own (a head at its level cannot push another below)
                gradients.backward({name: flooded(loss, s.flood) * share for name, loss in raw.items()})
            gradients.apply()
            if s.clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), s.clip)
            optimizer.step()
            schedule.step()
        return {name: total / max(len(batches), 1) for name, total in totals.items()}

    def _optimizer(self, model: MultiTagger, scaling: LrScaling) -> torch.optim.Optimizer:
        """The registered ``--optimizer`` over the encoder's parameter groups (``--encoder-lr``) and the
        heads (``--lr``), the rates scaled for the global batch."""
        s = self.settings
        lr, encoder_lr = scaling.scaled(s.lr), scaling.scaled(s.encoder_lr)
        own = [*model.private.parameters(), *model.heads.parameters()]
        groups = [*model.encoder.parameter_groups(lr, encoder_lr), {"params": own, "lr": lr}]
        return build_optimizer(s.optimizer, [g for g in groups if g["params"]], lr=lr, weight_decay=s.weight_decay)

