"""``tagpipe_ner``: sets ``doc.ents`` from a tagpipe NER model, each with a confidence score.

``Span._.tagpipe_score`` is the mean, over the entity's tokens, of the marginal probability of
the predicted tag (forward-backward for a CRF), so it is comparable across entity lengths.
``existing_ents`` says what happens to entities already on the doc (an earlier ``ner``):

- ``overwrite`` (default): ours replace them;
- ``merge``: both are kept; where they overlap the longer span wins (ours on a tie);
- ``keep``: theirs stay as they are; ours are added only where they overlap none of theirs.

``overwrite_ents`` is the same choice under the name spaCy's ``entity_ruler`` / ``span_ruler`` use:
true is ``overwrite``, false is ``merge``. ``label_map`` renames our labels as they are set
(``{"PER": "PERSON", "LOC": "GPE"}``), so a CoNLL model can join an OntoNotes pipeline with one label
scheme in ``doc.ents``; training inside spaCy maps the gold labels back.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from spacy.language import Language
from spacy.scorer import get_ner_prf
from spacy.tokens import Doc, Span
from spacy.training import Example
from spacy.util import filter_spans

from tagpipe.names import EXISTING_ENTS
from tagpipe.spacy_bridge.base import TaggerComponent

BILUO_TO_BIOES = {"B": "B", "I": "I", "L": "E", "U": "S"}


class NERComponent(TaggerComponent):
    """Named entities from any registered encoder x decoder trained for the ``ner`` task."""

    task = "ner"

    def __init__(self, nlp: Language | None, name: str, *, model: str | None, scores: bool = True,
                 existing_ents: str = "overwrite", overwrite_ents: bool | None = None,
                 label_map: dict[str, str] | None = None, **config: Any) -> None:
        if existing_ents not in EXISTING_ENTS:
            raise ValueError(f"{name}: existing_ents must be one of {', '.join(EXISTING_ENTS)}, not {existing_ents!r}")
        if overwrite_ents is not None:
            existing_ents = "overwrite" if overwrite_ents else "merge"
        label_map = dict(label_map or {})
        if not all(isinstance(k, str) and isinstance(v, str) and k and v for k, v in label_map.items()):
            raise ValueError(f"{name}: label_map must map label names to label names, not {label_map!r}")
        super().__init__(nlp, name, model=model, scores=scores, existing_ents=existing_ents, label_map=label_map,
                         **config)
        self.scores = scores
        self.existing_ents = existing_ents
        self.label_map = label_map
        self._unmap = {v: k for k, v in label_map.items()}

    def default_model(self) -> Path | None:
        from tagpipe.defaults import default_model_path

        return default_model_path()

    @property
    def labels(self) -> tuple[str, ...]:
        """The entity types the component sets (the model's, renamed by ``label_map``)."""
        return tuple(sorted({self.label_map.get(tag[2:], tag[2:]) for tag in self.model_labels() if tag != "O"}))

    def label_names(self) -> tuple[str, ...]:
        return self.labels

    def labels_for(self, names: Sequence[str]) -> list[str]:
        return [f"{prefix}-{self._unmap.get(name, name)}" for name in names for prefix in "BIES"]

    def set_annotations(self, docs: list[Doc]) -> None:
        from tagpipe.corpora.schemes import tags_to_spans

        segments, tags, probs = self.tag_segments(docs)
        found: dict[int, list[Span]] = {id(d): [] for d in docs}
        scores: dict[int, float] = {}  # id(span) -> score, set once we know which spans stay
        for (doc, offset, _), sent_tags, sent_probs in zip(segments, tags, probs, strict=True):
            for start, end, label in tags_to_spans(sent_tags, self.tagger.scheme or "iob2"):
                span = Span(doc, offset + start, offset + end, label=self.label_map.get(label, label))
                if sent_probs:
                    scores[id(span)] = float(sum(sent_probs[start:end]) / (end - start))
                found[id(doc)].append(span)
        for doc in docs:
            chosen = combine(list(doc.ents), found[id(doc)], self.existing_ents)
            doc.set_ents(chosen, default="outside")
            if self.scores:
                # extension values are keyed by character offsets: set them on our kept spans only
                for span in chosen:
                    if id(span) in scores:
                        span._.tagpipe_score = scores[id(span)]

    # -- training inside spaCy -----------------------------------------------------------
    def gold_tags(self, example: Example) -> list[str | None]:
        out: list[str | None] = []
        for tag in example.get_aligned_ner():
            if tag is None or tag == "-":
                out.append(None)
            elif tag == "O":
                out.append("O")
            else:
                out.append(f"{BILUO_TO_BIOES[tag[0]]}-{self._unmap.get(tag[2:], tag[2:])}")
        return out

    def labels_from_examples(self, examples: Sequence[Example]) -> list[str]:
        from tagpipe.model import span_labels

        return span_labels(sorted({self._unmap.get(e.label_, e.label_) for ex in examples for e in ex.reference.ents}),
                           "bioes")

    def score(self, examples: Iterable[Example], **kwargs: Any) -> dict[str, Any]:
        """``ents_p``, ``ents_r``, ``ents_f`` and ``ents_per_type``, as spaCy's own ``ner`` reports."""
        return get_ner_prf(examples, **kwargs)


def combine(existing: list[Span], ours: list[Span], mode: str) -> list[Span]:
    """The entities to set, from those already on the doc and ours, by ``existing_ents`` mode."""
    if mode == "overwrite" or not existing:
        return ours
    if mode == "merge":
        return sorted(filter_spans(ours + existing), key=lambda s: s.start)  # filter_spans: longest, then first
    taken = {i for span in existing for i in range(span.start, span.end)}
    added = [s for s in ours if not taken.intersection(range(s.start, s.end))]
    return sorted(existing + added, key=lambda s: s.start)
