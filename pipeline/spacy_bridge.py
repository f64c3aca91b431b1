"""spaCy components backed by tagpipe models: ``nlp.add_pipe("tagpipe_ner", config={"model": PATH})``.

The factories are exposed through the ``spacy_factories`` entry point, so spaCy finds them
without tagpipe being imported first. A component saves its model inside the spaCy pipeline
folder (``to_disk``) and loads it from there (``from_disk``); the ``model`` config value only
serves the first construction, so ``spacy.load`` works after the original folder is gone.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from spacy.language import Language
from spacy.tokens import Doc, Span
from spacy.util import minibatch

from pipeline.defaults import default_model_path

if not Span.has_extension("tagpipe_score"):
    Span.set_extension("tagpipe_score", default=None)


class NERComponent:
    """Sets ``doc.ents`` from a tagpipe NER model; batches documents on the model side."""

    def __init__(self, nlp: Language, name: str, model: str | None, batch_size: int, device: str,
                 scores: bool) -> None:
        self.name = name
        self.model_path = model
        self.batch_size = batch_size
        self.device = device
        self.scores = scores
        self._tagger: Any = None

    @property
    def tagger(self):
        """The loaded model, read on first use (``spacy.load`` replaces it in ``from_disk``)."""
        if self._tagger is None:
            from pipeline.model import Tagger

            self._tagger = Tagger.load(self.model_path or default_model_path(), device=self.device)
        return self._tagger

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(sorted({tag[2:] for tag in self.tagger.labels if tag != "O"}))

    def __call__(self, doc: Doc) -> Doc:
        self.set_annotations([doc])
        return doc

    def pipe(self, docs: Iterable[Doc], batch_size: int | None = None) -> Iterator[Doc]:
        for batch in minibatch(docs, size=batch_size or self.batch_size):
            self.set_annotations(batch)
            yield from batch

    def set_annotations(self, docs: list[Doc]) -> None:
        """Tag each sentence (or each whole doc when no sentence boundaries are set) and set ents."""
        from corpora.schemes import tags_to_spans

        segments = [(d, s.start, s.end) for d in docs for s in _segments(d)]
        tags, probs = self.tagger.tag([[t.text for t in d[a:b]] for d, a, b in segments],
                                      batch_size=self.batch_size, with_scores=True)
        found: dict[int, list[Span]] = {id(d): [] for d in docs}
        for (doc, offset, _), sent_tags, sent_probs in zip(segments, tags, probs, strict=True):
            for start, end, label in tags_to_spans(sent_tags, self.tagger.scheme or "iob2"):
                span = Span(doc, offset + start, offset + end, label=label)
                if self.scores:
                    span._.tagpipe_score = float(sum(sent_probs[start:end]) / (end - start))
                found[id(doc)].append(span)
        for doc in docs:
            doc.ents = found[id(doc)]

    def to_disk(self, path: str | Path, *, exclude: Iterable[str] = ()) -> None:
        self.tagger.save(Path(path))

    def from_disk(self, path: str | Path, *, exclude: Iterable[str] = ()) -> NERComponent:
        from pipeline.model import Tagger

        self._tagger = Tagger.load(Path(path), device=self.device)
        return self


def _segments(doc: Doc):
    if len(doc) and doc.has_annotation("SENT_START"):
        return list(doc.sents)
    return [doc[:]] if len(doc) else []


@Language.factory(
    "tagpipe_ner",
    default_config={"model": None, "batch_size": 64, "device": "cpu", "scores": True},
    assigns=["doc.ents", "token.ent_iob", "token.ent_type", "span._.tagpipe_score"],
)
def make_ner(nlp: Language, name: str, model: str | None, batch_size: int, device: str, scores: bool) -> NERComponent:
    """The ``tagpipe_ner`` factory: ``model`` is a tagpipe model folder (default: the embedded one)."""
    return NERComponent(nlp, name, model, batch_size, device, scores)
