"""Flooding (``--flood B``; Ishida et al. 2020, "Do we need zero training loss after achieving zero training
error?"; kexue.fm's note on it): train on ``|L - B| + B`` instead of ``L``.

Above the flood level B the loss and its gradient are unchanged; below it the gradient is ``-dL``, so the
step goes *up* the loss, back towards B. The training loss then floats around B instead of going to zero:
a regulariser for small corpora that a model can memorise. ``B = 0`` is off (``|L| = L`` for a loss >= 0).
The level applies to each pass's mean loss (one pass per optimizer step unless ``--accumulate`` or torchrun
splits the step), in the unit of the loss the epochs print.
"""

from __future__ import annotations

import torch


def flooded(loss: torch.Tensor, level: float) -> torch.Tensor:
    """``|loss - level| + level``; ``loss`` itself when ``level`` is 0 (so runs without --flood are unchanged)."""
    if not level:
        return loss
    return (loss - level).abs() + level
