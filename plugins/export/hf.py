"""``tagpipe export MODEL --to hf OUT``: a BERT-encoder tagger as a Hugging Face token-classification folder.

Between the transformer and the tag scores our tagger has: the first subword of each word (``first``
pooling), dropout (off at inference), and the decoder's ``Linear(hidden, tags)``. HF's
``*ForTokenClassification`` head is dropout and a ``Linear`` on every subword, so the export is exact:
the transformer's weights go to the HF model's base model, the decoder's projection to its
``classifier``, and HF's logits at each word's first subword are our decoder's scores (checked on sample
sentences before anything is written). A word's label is then its first subword's, which is what HF's
pipeline gives with ``aggregation_strategy="first"``.

Labels: our NER models score BIOES tags. By default (``labels="iob2"``) ``id2label`` names each class by
what it means in IOB2, HF's convention (``B-X`` and ``S-X`` -> ``B-X``; ``I-X``, ``E-X`` and ``M-X`` ->
``I-X``), so the pipeline's entity grouping (``aggregation_strategy="simple"``/``"first"``) finds our
spans; two classes then share a name, and ``label2id`` maps each name to the first. ``labels="model"``
keeps our tag names. The model's own tag list, scheme and decoder are kept under ``"tagpipe"`` in
``config.json``.

With the CRF decoder HF's argmax ignores the transitions: ``crf_transitions.json`` holds them (``null``:
forbidden by the scheme), and :func:`tagpipe.plugins.export.chains.viterbi` over HF's logits gives our tags.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from tagpipe.model import Tagger
from tagpipe.plugins.encoders.bert import quiet_transformers
from tagpipe.plugins.export.chains import to_json
from tagpipe.plugins.export.checks import LABEL_NAMES, ExportError, check_source, staged_folder

TRANSITIONS_FILE = "crf_transitions.json"
#: sentences the export checks the head on (any words: unknown ones become [UNK])
PROBE = [["Angela", "Merkel", "visited", "Paris", "on", "Tuesday", "."], ["It", "rained", "."], ["Hello"]]
HEAD_TOLERANCE = 1e-4  # largest difference allowed between HF's logits and our scores


def iob2_name(tag: str) -> str:
    """A BIOES/BMES tag by its IOB2 meaning: ``S-X`` -> ``B-X``, ``E-X``/``M-X`` -> ``I-X``."""
    prefix, sep, label = tag.partition("-")
    if not sep or prefix not in {"B", "I", "E", "S", "M"}:
        return tag
    return f"{'B' if prefix in {'B', 'S'} else 'I'}-{label}"


def label_names(labels: Sequence[str], scheme: str | None, mode: str) -> list[str]:
    """The ``id2label`` names of our classes: IOB2 meanings for span models (``mode="iob2"``), else as is."""
    if mode not in LABEL_NAMES:
        raise ExportError(f"--labels {mode!r}: expected one of {', '.join(LABEL_NAMES)}")
    if mode == "model" or scheme not in ("bioes", "bmes"):
        return list(labels)
    return [iob2_name(tag) for tag in labels]


def export_hf(model: Path, out: Path, *, labels: str = "iob2") -> dict[str, Any]:
    """Write ``out`` for the BERT-encoder tagger in ``model``; a summary of what was written."""
    check_source(model, "hf")
    tagger = Tagger.load(model).eval()
    names = label_names(tagger.labels, tagger.scheme, labels)
    hf = token_classifier(tagger, names)
    check_head(tagger, hf)
    with staged_folder(out) as staging, quiet_transformers():
        hf.save_pretrained(staging)
        tagger.encoder.tokenizer.save_pretrained(staging)
        if tagger.decoder_name == "tagpipe.crf.v1":
            transitions, start, end = (t.detach().float().numpy() for t in tagger.decoder.crf.scores(hard=True))
            crf = {"labels": tagger.labels, "transitions": to_json(transitions), "start": to_json(start),
                   "end": to_json(end)}
            (staging / TRANSITIONS_FILE).write_text(json.dumps(crf, indent=1) + "\n", encoding="utf-8")
    return {"target": "hf", "out": str(out), "architecture": type(hf).__name__, "labels": len(names),
            "crf_transitions": tagger.decoder_name == "tagpipe.crf.v1"}


def token_classifier(tagger: Tagger, names: list[str]) -> Any:
    """An ``AutoModelForTokenClassification`` carrying the tagger's transformer and projection."""
    from transformers import AutoModelForTokenClassification

    encoder, decoder = tagger.encoder, tagger.decoder
    config = encoder.model.config.__class__.from_dict(encoder.model.config.to_dict())
    config.num_labels = len(names)
    config.id2label = dict(enumerate(names))
    label2id: dict[str, int] = {}
    for i, name in enumerate(names):
        label2id.setdefault(name, i)  # a name two classes share maps to the first
    config.label2id = label2id
    config.architectures = None
    config.classifier_dropout = encoder.cfg.dropout  # the dropout our tagger trained with before the projection
    config.tagpipe = {"labels": tagger.labels, "scheme": tagger.scheme, "task": tagger.task,
                      "decoder": tagger.decoder_name, "label_names": "model" if names == tagger.labels else "iob2"}
    try:
        with quiet_transformers():
            hf = AutoModelForTokenClassification.from_config(config)
    except ValueError as exc:
        raise ExportError(f"Hugging Face has no token-classification model for {config.model_type!r} "
                          f"({' '.join(str(exc).split())})") from None
    base = hf.base_model
    result = base.load_state_dict(encoder.model.state_dict(), strict=False)
    missing = [k for k in result.missing_keys if not k.startswith("pooler.")]
    if missing or result.unexpected_keys:
        raise ExportError(f"{type(hf).__name__}'s encoder does not take our transformer's weights as they are "
                          f"(missing {missing[:3]}, unexpected {result.unexpected_keys[:3]})")
    head = getattr(hf, "classifier", None)
    if not isinstance(head, torch.nn.Linear) or head.weight.shape != decoder.projection.weight.shape:
        raise ExportError(f"{type(hf).__name__}'s head is not one Linear layer on each subword, so it cannot "
                          "hold our projection")
    head.load_state_dict(decoder.projection.state_dict())
    return hf.eval()


def check_head(tagger: Tagger, hf: Any) -> None:
    """HF's logits at each word's first subword equal our decoder's scores, or nothing is written."""
    ours = first_subword_logits(tagger, hf, PROBE)
    with torch.no_grad():
        hidden, mask = tagger.encode(tagger.featurize(PROBE))
        expected = tagger.decoder.projection(hidden)[mask]
    gap = (ours - expected).abs().max().item()
    if not gap <= HEAD_TOLERANCE:
        raise ExportError(f"{type(hf).__name__}'s logits differ from the tagger's scores by {gap:.3g}: its head "
                          "does not compute what our decoder does; nothing was written")


def first_subword_logits(tagger: Tagger, hf: Any, sentences: Sequence[Sequence[str]]) -> torch.Tensor:
    """HF's logits at the first subword of each word of ``sentences``, all words in a row ``[words, C]``."""
    rows = []
    tokenizer = tagger.encoder.tokenizer
    for words in sentences:
        enc = tokenizer(list(words), is_split_into_words=True, return_tensors="pt")
        with torch.no_grad():
            logits = hf(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits[0]
        firsts: dict[int, int] = {}
        for position, word in enumerate(enc.word_ids()):
            if word is not None:
                firsts.setdefault(word, position)
        rows.append(logits[[firsts[w] for w in range(len(words))]])
    return torch.cat(rows)


def pipeline_word_labels(pipe: Any, sentences: Sequence[Sequence[str]], **options: Any) -> list[list[str]]:
    """Each word's label from an HF token-classification ``pipe``: that of the subword starting at the word
    (pre-split input, no aggregation, nothing ignored), so labels compare word for word with ours."""
    outputs = pipe([list(s) for s in sentences], is_split_into_words=True, ignore_labels=[], **options)
    labels = []
    for words, tokens in zip(sentences, outputs, strict=True):
        by_start: dict[int, str] = {}
        for token in tokens:
            by_start.setdefault(token["start"], token["entity"])
        starts, at = [], 0
        for word in words:
            starts.append(at)
            at += len(word) + 1  # the pipeline joins pre-split words with one space
        labels.append([by_start.get(s, "?") for s in starts])
    return labels
