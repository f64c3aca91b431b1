"""``tagpipe.load(path).predict(texts)``: the Python face of ``tagpipe annotate``."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from tagpipe.defaults import model_path


class Predictor:
    """A spaCy pipeline (blank tokenizer of the model's language + the component of the model's task)."""

    def __init__(self, nlp: Any) -> None:
        self.nlp = nlp

    @classmethod
    def load(cls, path: str | Path | None = None, *, device: str = "cpu", batch_size: int | None = None,
             precision: str = "fp32") -> Predictor:
        """``batch_size``: items per forward pass (None: the component's default)."""
        from tagpipe.model_folder import read_model_config
        from tagpipe.tasks import add_model_pipe, blank_nlp

        path = model_path(path)
        config = read_model_config(path)
        nlp = blank_nlp(config)
        add_model_pipe(nlp, path, config, device=device, batch_size=batch_size,  # loads now: errors surface here
                       precision=precision)
        return cls(nlp)

    def stream(self, items: Iterable[tuple[Any, str, dict[str, Any]]], batch_size: int = 1024) -> Iterator[dict]:
        """Records for ``(id, text, extra)`` items, in order, batched through ``nlp.pipe``."""
        from tagpipe.annotating.records import doc_to_record

        for doc, (doc_id, extra) in self.nlp.pipe(((t, (i, e)) for i, t, e in items), as_tuples=True,
                                                   batch_size=batch_size):
            yield doc_to_record(doc, doc_id, extra)

    def predict(self, texts: Iterable[str], batch_size: int = 1024) -> list[dict[str, Any]]:
        """One record per text: ``{"id", "text", "tokens", "entities"}`` (plus the fields of the model's
        task, e.g. ``triples`` or ``generated``), ids counting from 1."""
        return list(self.stream(((i, t, {}) for i, t in enumerate(texts, 1)), batch_size=batch_size))
