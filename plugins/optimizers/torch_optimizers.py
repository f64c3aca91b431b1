"""torch's AdamW, Adafactor and SGD as tagpipe optimizers: the factory signature of the
``register_optimizers`` hook (``param_groups, lr, weight_decay``) and their ``--lr-scaling`` default.

Subclasses rather than wrappers, so the state dict (and so ``--resume`` of checkpoints written when the
optimizers were hard-wired in the training loop) is exactly torch's.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import torch


class AdamW(torch.optim.AdamW):
    """Adam with decoupled weight decay (torch's defaults: betas 0.9, 0.999, eps 1e-8)."""

    lr_scaling: ClassVar[str] = "sqrt"

    def __init__(self, params: Iterable[Any], *, lr: float, weight_decay: float = 0.0) -> None:
        super().__init__(params, lr=lr, weight_decay=weight_decay)


class Adafactor(torch.optim.Adafactor):
    """Adafactor: factored second moments, memory ~ rows + columns per matrix instead of rows x columns."""

    lr_scaling: ClassVar[str] = "sqrt"

    def __init__(self, params: Iterable[Any], *, lr: float, weight_decay: float = 0.0) -> None:
        super().__init__(params, lr=lr, weight_decay=weight_decay)


class SGD(torch.optim.SGD):
    """SGD with momentum 0.9: its step is linear in the gradient, so its lr scales linearly with the batch."""

    lr_scaling: ClassVar[str] = "linear"

    def __init__(self, params: Iterable[Any], *, lr: float, weight_decay: float = 0.0) -> None:
        super().__init__(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
