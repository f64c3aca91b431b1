"""Where the embedded default model lives (shipped inside the ``plugins`` package)."""

from __future__ import annotations

from pathlib import Path

from pipeline.errors import ModelError


def default_model_path() -> Path:
    """The embedded English NER model (BiLSTM-CRF trained on CoNLL-2003)."""
    import plugins

    path = Path(plugins.__file__).resolve().parent / "default_model"
    if not (path / "config.json").is_file():
        raise ModelError(f"the embedded default model is missing at {path}; pass --model")
    return path
