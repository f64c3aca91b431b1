"""spaCy component ``tagpipe_seq2seq``: writes a generated text to ``doc._.tagpipe_generated``.

The source is ``doc.text``. The model (a folder from ``tagpipe train --task seq2seq``) is read lazily on
the first document; ``nlp.to_disk`` stores it inside the pipeline folder, ``to_bytes`` as a
msgpack dict of that folder's files (as :mod:`tagpipe.spacy_bridge.base` does for taggers), so a
saved pipeline loads without the original folder. Found by spaCy through the
``spacy_factories`` entry point::

    nlp = spacy.blank("en")
    nlp.add_pipe("tagpipe_seq2seq", config={"model": "/models/webnlg-d2t", "strategy": "beam"})
    nlp("The Eagle | eatType | coffee shop")._.tagpipe_generated
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from spacy.language import Language
from spacy.tokens import Doc

from tagpipe.errors import ModelError
from tagpipe.plugins.seq2seq.names import EXTENSION, STRATEGIES
from tagpipe.spacy_bridge.base import ModelComponent

DECODING_CONFIG: dict[str, Any] = {
    "strategy": "greedy", "num_beams": 4, "length_penalty": 1.0, "top_k": 0, "top_p": 1.0,
    "temperature": 1.0, "seed": 0, "max_length": None,
}


def register_extensions() -> None:
    """``Doc._.tagpipe_generated``: the text generated from the doc (None until the component ran)."""
    if not Doc.has_extension(EXTENSION):
        Doc.set_extension(EXTENSION, default=None)


register_extensions()


class Seq2SeqComponent(ModelComponent):
    """Runs a :class:`tagpipe.plugins.seq2seq.model.Seq2SeqModel` on ``doc.text`` in batches."""

    #: spaCy inspects ``proc.model`` for thinc models (``hasattr`` would load ours): ours is ``seq2seq``
    model = None

    def __init__(self, nlp: Language | None, name: str, *, model: str | None, batch_size: int = 16,
                 device: str = "cpu", **decoding: Any) -> None:
        if decoding.get("strategy", "greedy") not in STRATEGIES:
            raise ValueError(f"{name}: strategy must be one of {STRATEGIES}, not {decoding['strategy']!r}")
        super().__init__(name, model=model, batch_size=batch_size, device=device)
        self.decoding = {**DECODING_CONFIG, **decoding}
        self._model: Any = None
        register_extensions()

    @property
    def seq2seq(self):
        """The loaded seq2seq model, read on first use."""
        if self._model is None:
            from tagpipe.plugins.seq2seq.model import Seq2SeqModel

            if self.model_path is None:
                raise ModelError(f"{self.name}: no model; pass config={{'model': PATH}} (tagpipe train --task seq2seq)")
            self._model = Seq2SeqModel.load(self.model_path, device=self.device)
        return self._model

    @property
    def is_loaded(self) -> bool:
        return self._model is not None

    def set_annotations(self, docs: list[Doc]) -> None:
        texts = self.seq2seq.generate([d.text for d in docs], batch_size=self.batch_size, **self.decoding)
        for doc, text in zip(docs, texts, strict=True):
            doc._.set(EXTENSION, text)

    # -- serialisation -------------------------------------------------------------------
    def loaded(self) -> Any:
        return self.seq2seq

    def adopt(self, model: Any) -> None:
        self._model = model

    def load_model(self, path: Path, device: str = "cpu") -> Any:
        from tagpipe.plugins.seq2seq.model import Seq2SeqModel

        return Seq2SeqModel.load(path, device=device)

    def init_kwargs(self) -> dict[str, Any]:
        return {"model": self.model_path, "batch_size": self.batch_size, "device": self.device, **self.decoding}


@Language.factory(
    "tagpipe_seq2seq",
    default_config={"model": None, "batch_size": 16, "device": "cpu", **DECODING_CONFIG},
    assigns=[f"doc._.{EXTENSION}"],
)
def make_seq2seq(nlp: Language, name: str, model: str | None, batch_size: int, device: str, strategy: str,
                 num_beams: int, length_penalty: float, top_k: int, top_p: float, temperature: float, seed: int,
                 max_length: int | None) -> Seq2SeqComponent:
    """``model``: a tagpipe seq2seq folder; the rest choose the decoding (``docs/seq2seq.md``)."""
    return Seq2SeqComponent(nlp, name, model=model, batch_size=batch_size, device=device, strategy=strategy,
                            num_beams=num_beams, length_penalty=length_penalty, top_k=top_k, top_p=top_p,
                            temperature=temperature, seed=seed, max_length=max_length)
