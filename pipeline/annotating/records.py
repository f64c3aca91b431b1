"""The JSON record written per document by ``tagpipe annotate`` and ``Predictor.predict``."""

from __future__ import annotations

from typing import Any

from spacy.tokens import Doc, Span

from tagpipe.tasks import record_fields


def doc_to_record(doc: Doc, doc_id: Any, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """``{"id", "text", "tokens", "entities": [{"start", "end", "label", "text", "score"}]}`` plus
    the input's other fields (``extra``) and those the tasks' components set on the doc
    (``tagpipe.tasks.record_fields``: ``triples``, ``generated``, ...)."""
    record: dict[str, Any] = dict(extra or {})
    record.update(id=doc_id, text=doc.text, tokens=[t.text for t in doc])
    entities = []
    scored = Span.has_extension("tagpipe_score")
    for ent in doc.ents:
        entity = {"start": ent.start_char, "end": ent.end_char, "label": ent.label_, "text": ent.text}
        score = ent._.tagpipe_score if scored else None
        if score is not None:
            entity["score"] = round(score, 4)
        entities.append(entity)
    record["entities"] = entities
    record.update(record_fields(doc))
    return record
