"""``tagpipe_multi``: every head of a multi-task model from one forward pass over each doc's sentences.

Where each head goes is recorded in the model (``heads[].spacy``, chosen at training by
:func:`tagpipe.plugins.multitask.heads.assign_targets`):

- ``ents``: ``doc.ents`` (the entity head: ``ner``, else the first span head), replacing earlier ones;
- ``spans``: ``doc.spans[NAME]`` (chunks and other span heads), labelled spans;
- ``tag`` / ``pos``: ``token.tag_`` / ``token.pos_`` (the first tag head; ``pos_`` keeps UPOS tags only);
- always: ``Doc._.tagpipe_heads`` = ``{head: (kind, tags)}`` with one tag per token (IOB2 for span heads),
  the record fields of ``tagpipe annotate``, and ``Doc._.tagpipe_columns``, the heads' tags in the order
  of the corpus columns they learnt (annotate's CoNLL output writes them as columns).

The model folder is saved inside the pipeline (``to_disk``), read back by ``spacy.load`` (``from_disk``),
and pickled with its weights (``nlp.pipe(n_process=2)``), as every tagpipe component.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from spacy.language import Language
from spacy.parts_of_speech import IDS as UPOS_IDS
from spacy.tokens import Doc, Span

from tagpipe.errors import ModelError
from tagpipe.names import COLUMNS_EXTENSION
from tagpipe.plugins.multitask.task import HEADS_EXTENSION
from tagpipe.spacy_bridge.base import ModelComponent, segments_of


def register_extensions() -> None:
    """``Doc._.tagpipe_heads`` and ``Doc._.tagpipe_columns``: None until the component runs."""
    for name in (HEADS_EXTENSION, COLUMNS_EXTENSION):
        if not Doc.has_extension(name):
            Doc.set_extension(name, default=None)


register_extensions()


class MultiComponent(ModelComponent):
    """Runs a :class:`tagpipe.plugins.multitask.model.MultiTagger`: all heads, one encoder pass."""

    def __init__(self, nlp: Language | None, name: str, *, model: str | None, batch_size: int = 128,
                 device: str = "cpu", precision: str = "fp32") -> None:
        super().__init__(name, model=model, batch_size=batch_size, device=device, precision=precision)
        self._model: Any = None

    @property
    def model(self):
        """The loaded model, read on first use."""
        if self._model is None:
            if self.model_path is None:
                raise ModelError(f"{self.name}: no model; pass config={{'model': PATH}} (a folder written by "
                                 "`tagpipe train --task multi`)")
            self._model = self.load_model(Path(self.model_path), device=self.device)
        return self._model

    @property
    def is_loaded(self) -> bool:
        return self._model is not None

    @property
    def labels(self) -> tuple[str, ...]:
        """Every head's tags, as ``HEAD:TAG``."""
        return tuple(f"{name}:{tag}" for name, spec in self.model.specs.items() for tag in spec.labels)

    def set_annotations(self, docs: list[Doc]) -> None:
        from tagpipe.corpora.schemes import tags_to_spans

        segments = [(doc, span) for doc in docs for span in segments_of(doc)]
        sentences = [[t.text for t in span] for _, span in segments]
        predicted = self.model.tag(sentences, batch_size=self.batch_size, precision=self.precision)
        specs = self.model.specs
        per_doc = {id(doc): {name: ["O" if spec.kind == "span" else ""] * len(doc) for name, spec in specs.items()}
                   for doc in docs}
        for k, (doc, span) in enumerate(segments):
            for name in specs:
                tags = predicted[name][k]
                per_doc[id(doc)][name][span.start:span.start + len(tags)] = tags
        for doc in docs:
            heads = per_doc[id(doc)]
            for name, spec in specs.items():
                tags = heads[name]
                if spec.target in ("ents", "spans"):
                    spans = [Span(doc, a, b, label=label) for a, b, label in tags_to_spans(tags, "iob2")]
                    if spec.target == "ents":
                        doc.set_ents(spans, default="outside")
                    else:
                        doc.spans[name] = spans
                elif spec.target in ("tag", "pos"):
                    for token, tag in zip(doc, tags, strict=True):
                        if spec.target == "tag":
                            token.tag_ = tag
                        elif tag in UPOS_IDS:
                            token.pos_ = tag
            doc._.set(HEADS_EXTENSION, {name: (specs[name].kind, heads[name]) for name in specs})
            ordered = sorted(specs, key=lambda n: _column_order(specs[n].column))
            doc._.set(COLUMNS_EXTENSION, [heads[name] for name in ordered])

    # -- serialisation (ModelComponent's, through these) -------------------------------------
    def loaded(self) -> Any:
        return self.model

    def adopt(self, model: Any) -> None:
        self._model = model

    def load_model(self, path: Path, device: str = "cpu") -> Any:
        from tagpipe.plugins.multitask.model import MultiTagger

        return MultiTagger.load(path, device=device)

    def init_kwargs(self) -> dict[str, Any]:
        return {"model": self.model_path, "batch_size": self.batch_size, "device": self.device,
                "precision": self.precision}


def _column_order(column: int | str) -> tuple[int, Any]:
    """Numbered columns first, by index (negative ones after: they count from the end), then named fields."""
    if isinstance(column, int):
        return (0, column) if column >= 0 else (1, column)
    return (2, column)


@Language.factory(
    "tagpipe_multi",
    default_config={"model": None, "batch_size": 128, "device": "cpu", "precision": "fp32"},
    assigns=["doc.ents", "doc.spans", "token.tag", "token.pos", "doc._.tagpipe_heads", "doc._.tagpipe_columns"],
)
def make_multi(nlp: Language, name: str, model: str | None, batch_size: int, device: str,
               precision: str) -> MultiComponent:
    """``model``: a folder written by ``tagpipe train --task multi``."""
    return MultiComponent(nlp, name, model=model, batch_size=batch_size, device=device, precision=precision)
