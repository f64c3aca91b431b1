"""Where the embedded default model lives (shipped as package data of ``tagpipe.plugins``)."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from tagpipe.errors import ModelError

#: the package whose data holds the embedded models; named, not imported (the core never imports plugins)
EMBEDDED_MODELS_PACKAGE = "tagpipe.plugins"


def default_model_path() -> Path:
    """The embedded English NER model (BiLSTM-CRF trained on CoNLL-2003)."""
    path = Path(str(files(EMBEDDED_MODELS_PACKAGE) / "default_model"))
    if not (path / "config.json").is_file():
        raise ModelError(f"the embedded default model is missing at {path}; pass --model")
    return path
