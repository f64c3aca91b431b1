"""``tagpipe_tagger``: one tag per token from a tagpipe model trained with ``--task tag``.

The tags go to ``token.pos_`` when the model learnt UPOS (a CoNLL-U corpus read on its default
column, or ``--tag-column upos``), else to ``token.tag_`` (fine-grained tags, any CoNLL column);
``attr`` in the config overrides the choice. ``Token._.tagpipe_score`` is the marginal
probability of the predicted tag. ``Doc._.tagpipe_tags`` holds the model's tags as predicted, one
per token (``token.pos_`` keeps only UPOS tags): the ``tags`` of annotate's records and the tag
column of its CoNLL output.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from spacy.language import Language
from spacy.parts_of_speech import IDS as UPOS_IDS
from spacy.scorer import Scorer
from spacy.tokens import Doc
from spacy.training import Example

from tagpipe.spacy_bridge.base import TaggerComponent

ATTRS = ("pos", "tag")


def model_attr(meta: dict[str, Any]) -> str:
    """``pos`` or ``tag``: which token attribute a tag model's labels belong in."""
    if meta.get("spacy_attr") in ATTRS:
        return meta["spacy_attr"]
    settings = meta.get("settings") or {}
    column = settings.get("tag_column")
    if column == "upos" or (settings.get("format") == "conllu" and column is None):
        return "pos"
    return "tag"


class TokenTaggerComponent(TaggerComponent):
    """POS-like tags: UPOS into ``token.pos_``, anything else into ``token.tag_``."""

    task = "tag"

    def __init__(self, nlp: Language | None, name: str, *, model: str | None, attr: str | None = None,
                 scores: bool = True, **config: Any) -> None:
        if attr not in (None, *ATTRS):
            raise ValueError(f"{name}: attr must be 'pos', 'tag' or null (from the model), not {attr!r}")
        super().__init__(nlp, name, model=model, attr=attr, scores=scores, **config)
        self.attr_override = attr
        self.scores = scores

    @property
    def attr(self) -> str:
        """The token attribute written: the config's ``attr``, else what the model was trained on."""
        return self.attr_override or model_attr(self.tagger.meta)

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self.model_labels())

    def label_names(self) -> tuple[str, ...]:
        return self.labels

    def set_annotations(self, docs: list[Doc]) -> None:
        segments, tags, probs = self.tag_segments(docs)
        attr = self.attr
        predicted = {id(doc): [""] * len(doc) for doc in docs}
        for (doc, offset, _), sent_tags, sent_probs in zip(segments, tags, probs, strict=True):
            predicted[id(doc)][offset:offset + len(sent_tags)] = sent_tags
            for i, tag in enumerate(sent_tags):
                token = doc[offset + i]
                if attr == "tag":
                    token.tag_ = tag
                elif tag in UPOS_IDS:
                    token.pos_ = tag
                if sent_probs:
                    token._.tagpipe_score = float(sent_probs[i])
        for doc in docs:
            doc._.tagpipe_tags = predicted[id(doc)]

    # -- training inside spaCy -----------------------------------------------------------
    def _gold_attr(self, examples: Sequence[Example] = ()) -> str:
        if self._tagger is not None:
            return self.attr
        if self.attr_override:
            return self.attr_override
        has_pos = any(ex.reference.has_annotation("POS") for ex in examples)
        return "pos" if has_pos else "tag"

    def gold_tags(self, example: Example) -> list[str | None]:
        return list(example.get_aligned(self._gold_attr([example]).upper(), as_string=True))

    def labels_from_examples(self, examples: Sequence[Example]) -> list[str]:
        attr = self._gold_attr(examples)
        return sorted({getattr(t, attr + "_") for ex in examples for t in ex.reference} - {""})

    def initialize_meta(self, examples: Sequence[Example]) -> dict[str, Any]:
        return {"trained_with": "spacy", "spacy_attr": self._gold_attr(examples)}

    def score(self, examples: Iterable[Example], **kwargs: Any) -> dict[str, Any]:
        """``pos_acc`` or ``tag_acc``, whichever attribute this component writes."""
        return Scorer.score_token_attr(examples, self.attr, **kwargs)
