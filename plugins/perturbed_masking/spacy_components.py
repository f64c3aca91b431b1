"""spaCy components ``tagpipe_pm_parser`` and ``tagpipe_pm_segmenter`` (Perturbed Masking).

Neither has trainable weights: everything they need is their config (``pretrained`` is a
local HuggingFace folder), which ``nlp.to_disk`` stores in ``config.cfg``; the encoder loads
lazily on the first document. The factories are registered here at import time and found
by spaCy through the ``spacy_factories`` entry points in setup.cfg::

    nlp = spacy.blank("en")
    nlp.add_pipe("tagpipe_pm_parser", config={"pretrained": "/models/bert-base-uncased"})
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from spacy.attrs import DEP, HEAD
from spacy.language import Language
from spacy.tokens import Doc

LABEL, ROOT_LABEL = "dep", "ROOT"


class _LazyImpact:
    """Shared by both components: the config, and the encoder loaded on first use."""

    def __init__(self, name: str, **cfg: Any) -> None:
        from tagpipe.names import PRECISIONS
        from tagpipe.plugins.encoders.names import POOLINGS
        from tagpipe.plugins.perturbed_masking import names
        from tagpipe.plugins.perturbed_masking import protocol as pm_protocol

        allowed = {"distance": names.DISTANCES, "pooling": POOLINGS, "algorithm": names.ALGORITHMS,
                   "orientation": names.ORIENTATIONS, "root": names.ROOTS, "precision": PRECISIONS}
        for key, values in allowed.items():
            if key in cfg and cfg[key] not in values:
                raise pm_protocol.OptionError(f"{name}: unknown {key} {cfg[key]!r}; expected one of {values}")
        self.name = name
        self.cfg = cfg
        self._model = None

    @property
    def model(self):
        if self._model is None:
            from tagpipe.plugins.perturbed_masking.masking import ImpactModel

            keys = ("layer", "distance", "pooling", "device", "batch_tokens", "precision")
            self._model = ImpactModel.from_pretrained(self.cfg["pretrained"], **{k: self.cfg[k] for k in keys})
        return self._model

    def pipe(self, docs: Iterable[Doc], batch_size: int = 16) -> Iterator[Doc]:
        """Documents in batches, so the perturbed copies of several share forward passes."""
        batch: list[Doc] = []
        for doc in docs:
            batch.append(doc)
            if len(batch) >= batch_size:
                yield from self._process(batch)
                batch = []
        yield from self._process(batch)

    def __call__(self, doc: Doc) -> Doc:
        return self._process([doc])[0]

    def _process(self, docs: list[Doc]) -> list[Doc]:
        raise NotImplementedError

    def to_disk(self, path: str | Path, *, exclude: Iterable[str] = ()) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / "cfg.json").write_text(json.dumps(self.cfg, indent=2), encoding="utf-8")

    def from_disk(self, path: str | Path, *, exclude: Iterable[str] = ()):
        cfg = Path(path) / "cfg.json"
        if cfg.exists():
            self.cfg.update(json.loads(cfg.read_text(encoding="utf-8")))
            self._model = None
        return self


class PMParser(_LazyImpact):
    """Sets ``token.head`` and ``token.dep_`` (``dep``, root ``ROOT``) per sentence.

    Sentences are ``doc.sents`` when something earlier set boundaries, else the whole doc
    (one tree, so one sentence).
    """

    def _process(self, docs: list[Doc]) -> list[Doc]:
        from tagpipe.plugins.perturbed_masking.protocol import parse_matrix

        spans = [list(doc.sents) if doc.has_annotation("SENT_START") else [doc[:]] for doc in docs]
        flat = [[t.text for t in span] for doc_spans in spans for span in doc_spans]
        matrices = iter(self.model.matrices(flat) if flat else [])
        root_hash = docs[0].vocab.strings.add(ROOT_LABEL) if docs else 0
        label_hash = docs[0].vocab.strings.add(LABEL) if docs else 0
        for doc, doc_spans in zip(docs, spans, strict=True):
            offsets = np.zeros(len(doc), dtype=np.int64)
            labels = np.full(len(doc), label_hash, dtype=np.uint64)
            for span in doc_spans:
                matrix = next(matrices)
                if len(span) == 0:
                    continue
                heads = parse_matrix(matrix, self.cfg["algorithm"], self.cfg["orientation"], self.cfg["root"])
                for d, h in enumerate(heads[1:]):
                    i = span.start + d
                    if h == 0:
                        labels[i] = root_hash
                    else:
                        offsets[i] = span.start + h - 1 - i
            doc.from_array([HEAD, DEP], np.stack([offsets.astype(np.uint64), labels], axis=1))
        return docs


class PMSegmenter(_LazyImpact):
    """Merges tokens (characters, for ``spacy.blank("zh")``) into words.

    A boundary goes between adjacent tokens whose mutual impact is below ``threshold``
    (``null``: the mean over the chunk) and after any token followed by whitespace; long
    docs are cut into chunks of ``max_units`` tokens.
    """

    def _process(self, docs: list[Doc]) -> list[Doc]:
        from tagpipe.plugins.perturbed_masking.protocol import boundary_scores

        chunks: list[tuple[int, int, int]] = []  # (doc, start, end)
        for k, doc in enumerate(docs):
            start = 0
            for i, token in enumerate(doc):
                if token.whitespace_ or token.is_space or i - start + 1 >= self.cfg["max_units"]:
                    chunks.append((k, start, i + 1))
                    start = i + 1
            if start < len(doc):
                chunks.append((k, start, len(doc)))
        runs = [(k, s, e) for k, s, e in chunks if e - s > 1]
        impacts = self.model.adjacent_impacts([[t.text for t in docs[k][s:e]] for k, s, e in runs]) if runs else []
        merges: list[list[tuple[int, int]]] = [[] for _ in docs]
        threshold = self.cfg["threshold"]
        for (k, s, _e), impact in zip(runs, impacts, strict=True):
            scores = boundary_scores(impact)
            cut = float(scores.mean()) if threshold is None else threshold
            begin = s
            for gap, score in enumerate(scores):
                if score < cut:
                    merges[k].append((begin, s + gap + 1))
                    begin = s + gap + 1
            merges[k].append((begin, s + len(scores) + 1))
        for doc, spans in zip(docs, merges, strict=True):
            with doc.retokenize() as retokenizer:
                for s, e in spans:
                    if e - s > 1:
                        retokenizer.merge(doc[s:e])
        return docs


@Language.factory(
    "tagpipe_pm_parser",
    default_config={
        "layer": -1, "distance": "euclidean", "pooling": "first", "algorithm": "eisner",
        "orientation": "paper", "root": "cls", "device": "auto", "batch_tokens": 16384, "precision": "fp32",
    },
)
def make_pm_parser(
    nlp: Language, name: str, pretrained: str, layer: int, distance: str, pooling: str, algorithm: str,
    orientation: str, root: str, device: str, batch_tokens: int, precision: str,
) -> PMParser:
    """A dependency parser read off a masked LM (``pretrained``: a local HuggingFace folder)."""
    return PMParser(
        name, pretrained=str(pretrained), layer=layer, distance=distance, pooling=pooling, algorithm=algorithm,
        orientation=orientation, root=root, device=device, batch_tokens=batch_tokens, precision=precision,
    )


@Language.factory(
    "tagpipe_pm_segmenter",
    default_config={
        "layer": -1, "distance": "euclidean", "pooling": "first", "threshold": None, "max_units": 128,
        "device": "auto", "batch_tokens": 16384, "precision": "fp32",
    },
)
def make_pm_segmenter(
    nlp: Language, name: str, pretrained: str, layer: int, distance: str, pooling: str,
    threshold: float | None, max_units: int, device: str, batch_tokens: int, precision: str,
) -> PMSegmenter:
    """A word segmenter for unsegmented text, from adjacent-token impacts of a masked LM."""
    return PMSegmenter(
        name, pretrained=str(pretrained), layer=layer, distance=distance, pooling=pooling, threshold=threshold,
        max_units=max_units, device=device, batch_tokens=batch_tokens, precision=precision,
    )
