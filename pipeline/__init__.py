"""tagpipe's framework core and public API.

``from tagpipe import hookimpl`` is all a plugin needs; ``tagpipe.load(path)`` loads a trained
model folder. Heavy libraries (torch, spaCy, transformers) are imported only when used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tagpipe.hookspecs import hookimpl, hookspec

if TYPE_CHECKING:
    from tagpipe.predict import Predictor

__all__ = ["hookimpl", "hookspec", "load"]
__version__ = "0.1.0"


def load(path: str | None = None, *, device: str = "cpu") -> Predictor:
    """Load a trained model folder (the embedded default model when ``path`` is None)."""
    from tagpipe.predict import Predictor

    return Predictor.load(path, device=device)
