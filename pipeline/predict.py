"""``pipeline.load(path).predict(texts)``: the Python face of ``tagpipe annotate``."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pipeline.defaults import default_model_path
from pipeline.errors import ModelError

FACTORIES = {"ner": "tagpipe_ner", "tag": "tagpipe_tagger"}


class Predictor:
    """A spaCy pipeline (blank tokenizer of the model's language + our component)."""

    def __init__(self, nlp: Any) -> None:
        self.nlp = nlp

    @classmethod
    def load(cls, path: str | Path | None = None, *, device: str = "cpu", batch_size: int = 64) -> Predictor:
        import spacy

        import pipeline.spacy_bridge  # noqa: F401 - registers the factories without entry points

        path = Path(path) if path is not None else default_model_path()
        config_file = path / "config.json"
        if not config_file.is_file():
            raise ModelError(f"{path} is not a tagpipe model folder (no config.json)")
        config = json.loads(config_file.read_text())
        task = config.get("task", "ner")
        if task not in FACTORIES:
            raise ModelError(f"{path}: no spaCy component serves task {task!r}")
        tokenizer = config.get("tokenizer")  # e.g. {"segmenter": "char"}: Chinese tagged per character
        nlp = spacy.blank(config.get("lang", "en"), config={"nlp": {"tokenizer": tokenizer}} if tokenizer else {})
        component = nlp.add_pipe(FACTORIES[task], config={"model": str(path), "device": device,
                                                          "batch_size": batch_size})
        _ = component.tagger  # load now: errors surface here, not mid-stream
        return cls(nlp)

    def stream(self, items: Iterable[tuple[Any, str, dict[str, Any]]], batch_size: int = 64) -> Iterator[dict]:
        """Records for ``(id, text, extra)`` items, in order, batched through ``nlp.pipe``."""
        from pipeline.records import doc_to_record

        for doc, (doc_id, extra) in self.nlp.pipe(((t, (i, e)) for i, t, e in items), as_tuples=True,
                                                   batch_size=batch_size):
            yield doc_to_record(doc, doc_id, extra)

    def predict(self, texts: Iterable[str], batch_size: int = 64) -> list[dict[str, Any]]:
        """One record per text: ``{"id", "text", "tokens", "entities"}``, ids counting from 1."""
        return list(self.stream(((i, t, {}) for i, t in enumerate(texts, 1)), batch_size=batch_size))
