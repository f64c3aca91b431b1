"""spaCy factories backed by tagpipe models: ``tagpipe_ner`` and ``tagpipe_tagger``.

They are exposed through the ``spacy_factories`` entry point, so ``nlp.add_pipe("tagpipe_ner")``
and ``spacy.load`` work without importing tagpipe first. The components live in
``tagpipe.spacy_bridge.ner`` / ``tagpipe.spacy_bridge.tagger`` (shared machinery in ``tagpipe.spacy_bridge.base``);
this module only declares the factories (what they assign, their config, their score weights)
and our Span/Token extensions, all prefixed ``tagpipe_``, in one explicit function,
:func:`register_factories` (as spaCy's own ``spacy/pipeline/factories.py`` does), called once
when the entry point imports this module. Each builtin plugin with spaCy components (Perturbed
Masking, seq2seq, triples) declares its own in its ``spacy_component(s).py``, through its own
``spacy_factories`` entry points, as a third-party plugin would.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from spacy.language import Language
from spacy.tokens import Doc, Span, Token

from tagpipe.model_folder import read_model_config
from tagpipe.names import CONFIG_FILE
from tagpipe.spacy_bridge.base import add_requirements
from tagpipe.spacy_bridge.ner import NERComponent
from tagpipe.spacy_bridge.tagger import TokenTaggerComponent

EXTENSIONS = ((Span, "tagpipe_score"), (Token, "tagpipe_score"), (Doc, "tagpipe_tags"))


def register_extensions() -> None:
    """``Span._.tagpipe_score`` (entity confidence), ``Token._.tagpipe_score`` (tag confidence) and
    ``Doc._.tagpipe_tags`` (a tagging model's tags, one per token)."""
    for cls, name in EXTENSIONS:
        if not cls.has_extension(name):
            cls.set_extension(name, default=None)


TRAINING_CONFIG: dict[str, Any] = {
    "batch_size": 128,  # sentences per forward pass; nlp.pipe's batch is sorted by length into these
    "device": "cpu",
    "scores": True,
    "precision": "fp32",  # bf16/fp16: the encoder under autocast at prediction
    # what initialize() builds when spacy train trains the component (a trained model names its own)
    "encoder": "tagpipe.bilstm.v1",
    "decoder": "tagpipe.crf.v1",
    "encoder_config": {},
    "decoder_config": {},
    # kept so pipelines saved before spaCy's optimizer trained us still load; [training.optimizer] sets it now
    "lr": 2e-3,
}


def make_ner(nlp: Language, name: str, model: str | None, existing_ents: str, overwrite_ents: bool | None,
             label_map: dict[str, str], batch_size: int, device: str, scores: bool, precision: str, encoder: str,
             decoder: str, encoder_config: dict[str, Any], decoder_config: dict[str, Any], lr: float) -> NERComponent:
    """``model``: a tagpipe NER model folder (None: the embedded one, or what ``initialize`` trains);
    ``existing_ents``: overwrite, merge or keep entities set by an earlier component (``overwrite_ents``: spaCy's
    name for it, true = overwrite, false = merge); ``label_map``: our label -> the label set on the doc."""
    _declare_requirements(nlp, model)
    return NERComponent(nlp, name, model=model, existing_ents=existing_ents, overwrite_ents=overwrite_ents,
                        label_map=label_map, batch_size=batch_size, device=device,
                        scores=scores, precision=precision, encoder=encoder, decoder=decoder,
                        encoder_config=encoder_config, decoder_config=decoder_config, lr=lr)


def make_tagger(nlp: Language, name: str, model: str | None, attr: str | None, batch_size: int, device: str,
                scores: bool, precision: str, encoder: str, decoder: str, encoder_config: dict[str, Any],
                decoder_config: dict[str, Any], lr: float) -> TokenTaggerComponent:
    """``model``: a tagpipe model trained with ``--task tag``; ``attr``: "pos", "tag" or null (from the model)."""
    _declare_requirements(nlp, model)
    return TokenTaggerComponent(nlp, name, model=model, attr=attr, batch_size=batch_size, device=device,
                                scores=scores, precision=precision, encoder=encoder, decoder=decoder,
                                encoder_config=encoder_config, decoder_config=decoder_config, lr=lr)


def _declare_requirements(nlp: Language, model: str | None) -> None:
    """``meta.json`` names tagpipe (and the model's plugin distributions) for ``spacy package``;
    done here because ``nlp.to_disk`` writes meta.json before the components save themselves."""
    components: list[tuple[str, str]] = []
    if model and (Path(model) / CONFIG_FILE).is_file():
        config = read_model_config(model)
        components = [(part, config[part]["name"]) for part in ("encoder", "decoder")  # a bad config: Tagger.load says
                      if isinstance(config.get(part), dict) and isinstance(config[part].get("name"), str)]
    add_requirements(nlp.meta, components)


def register_factories() -> None:
    """Declare ``tagpipe_ner`` and ``tagpipe_tagger`` to spaCy, and our extensions (a second call re-declares
    the same functions, which spaCy allows: re-importing this module is harmless)."""
    register_extensions()
    Language.factory(
        "tagpipe_ner",
        default_config={"model": None, "existing_ents": "overwrite", "overwrite_ents": None, "label_map": {},
                        **TRAINING_CONFIG},
        assigns=["doc.ents", "token.ent_iob", "token.ent_type", "span._.tagpipe_score"],
        default_score_weights={"ents_f": 1.0, "ents_p": 0.0, "ents_r": 0.0, "ents_per_type": None},
    )(make_ner)
    Language.factory(
        "tagpipe_tagger",
        default_config={"model": None, "attr": None, **TRAINING_CONFIG},
        assigns=["token.pos", "token.tag", "token._.tagpipe_score"],
        default_score_weights={"pos_acc": 0.5, "tag_acc": 0.5},
    )(make_tagger)


register_factories()
