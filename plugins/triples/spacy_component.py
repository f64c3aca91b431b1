"""``tagpipe_triples``: relation triples from a tagpipe triples model, on ``Doc._.tagpipe_triples``.

``doc._.tagpipe_triples`` is a list of ``(subject Span, relation, object Span)``; each sentence
is run separately when sentence boundaries are set, else the whole doc. The model is read
lazily (``add_pipe`` stays cheap), saved as its model folder inside the pipeline folder
(``to_disk``) or as a msgpack dict of that folder's files (``to_bytes``), and pickled with its
weights (``nlp.pipe(n_process=2)``, ``tagpipe annotate --n-process``). The factory comes
through the ``spacy_factories`` entry point (importing this module also registers it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from spacy.language import Language
from spacy.tokens import Doc, Span

from tagpipe.errors import ModelError
from tagpipe.plugins.triples.names import EXTENSION
from tagpipe.spacy_bridge.base import ModelComponent, segments_of


def register_extension() -> None:
    """``Doc._.tagpipe_triples``: ``None`` until the component runs, then a list of triples."""
    if not Doc.has_extension(EXTENSION):
        Doc.set_extension(EXTENSION, default=None)


register_extension()


class TriplesComponent(ModelComponent):
    """Runs a :class:`tagpipe.plugins.triples.model.TripleModel` over each doc's sentences."""

    def __init__(self, nlp: Language | None, name: str, *, model: str | None, batch_size: int = 32,
                 device: str = "cpu", threshold: float = 0.0) -> None:
        super().__init__(name, model=model, batch_size=batch_size, device=device)
        self.threshold = threshold
        self._model: Any = None

    @property
    def model(self):
        """The loaded :class:`~tagpipe.plugins.triples.model.TripleModel`, read on first use."""
        if self._model is None:
            from tagpipe.plugins.triples.model import TripleModel

            if self.model_path is None:
                raise ModelError(f"{self.name}: no model; pass config={{'model': PATH}} (a folder written by "
                                 "`tagpipe train --task triples`)")
            self._model = TripleModel.load(self.model_path, device=self.device)
        return self._model

    @property
    def is_loaded(self) -> bool:
        return self._model is not None

    @property
    def labels(self) -> tuple[str, ...]:
        """The relations the model predicts."""
        return tuple(self.model.relations)

    def set_annotations(self, docs: list[Doc]) -> None:
        segments = [(doc, span) for doc in docs for span in segments_of(doc)]
        found = self.model.predict([[t.text for t in span] for _, span in segments], batch_size=self.batch_size,
                                   threshold=self.threshold)
        out: dict[int, list[tuple[Span, str, Span]]] = {id(d): [] for d in docs}
        for (doc, span), triples in zip(segments, found, strict=True):
            offset = span.start
            for t in triples:
                out[id(doc)].append((Span(doc, offset + t.s_start, offset + t.s_end), t.relation,
                                     Span(doc, offset + t.o_start, offset + t.o_end)))
        for doc in docs:
            doc._.set(EXTENSION, out[id(doc)])

    # -- serialisation -------------------------------------------------------------------------
    def loaded(self) -> Any:
        return self.model

    def adopt(self, model: Any) -> None:
        self._model = model

    def load_model(self, path: Path, device: str = "cpu") -> Any:
        from tagpipe.plugins.triples.model import TripleModel

        return TripleModel.load(path, device=device)

    def init_kwargs(self) -> dict[str, Any]:
        return {"model": self.model_path, "batch_size": self.batch_size, "device": self.device,
                "threshold": self.threshold}


@Language.factory(
    "tagpipe_triples",
    default_config={"model": None, "batch_size": 32, "device": "cpu", "threshold": 0.0},
    assigns=["doc._.tagpipe_triples"],
)
def make_triples(nlp: Language, name: str, model: str | None, batch_size: int, device: str,
                 threshold: float) -> TriplesComponent:
    """``model``: a folder written by ``tagpipe train --task triples``; ``threshold``: on the heads' logits."""
    return TriplesComponent(nlp, name, model=model, batch_size=batch_size, device=device, threshold=threshold)
