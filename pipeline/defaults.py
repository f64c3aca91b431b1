"""The embedded models: shipped as package data of ``tagpipe.plugins``, named so users can ask for them."""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from tagpipe.errors import ModelError

#: the package whose data holds the embedded models; named, not imported (the core never imports plugins)
EMBEDDED_MODELS_PACKAGE = "tagpipe.plugins"
DEFAULT_MODEL = "en"


@dataclass(frozen=True)
class EmbeddedModel:
    """One model folder shipped inside the package, and what it scored (docs/benchmarks.md has the runs)."""

    folder: str
    description: str
    test_score: str


EMBEDDED_MODELS = {
    "en": EmbeddedModel("default_model",
                        "English NER, BiLSTM-CRF over GloVe 50-d vectors, trained on CoNLL-2003 train + valid",
                        "CoNLL-2003 test F1 90.69"),
    "zh": EmbeddedModel("zh_model", "Chinese NER, character + bigram BiLSTM-CRF trained on MSRA",
                        "MSRA test F1 90.27"),
}


def embedded_model_path(name: str = DEFAULT_MODEL) -> Path:
    """The folder of the embedded model ``name``."""
    if name not in EMBEDDED_MODELS:
        raise ModelError(f"no embedded model named {name!r} (embedded: {', '.join(EMBEDDED_MODELS)})")
    path = Path(str(files(EMBEDDED_MODELS_PACKAGE) / EMBEDDED_MODELS[name].folder))
    if not (path / "config.json").is_file():
        raise ModelError(f"the embedded model {name!r} is missing at {path}; pass --model")
    return path


def default_model_path() -> Path:
    """The embedded English NER model, used when no model is named."""
    return embedded_model_path(DEFAULT_MODEL)


def model_path(model: str | Path | None) -> Path:
    """The folder a ``--model`` value (or a component's ``model`` config) names: None is the default model,
    an embedded model's name (``en``, ``zh``) that model, anything else a path.

    Names win over folders of the same name, as spaCy's package names do: write ``./en`` for a folder.
    """
    if model is None:
        return default_model_path()
    if isinstance(model, str) and model in EMBEDDED_MODELS:
        return embedded_model_path(model)
    return Path(model)
