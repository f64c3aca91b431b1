"""The learning rate follows the global batch size (``--lr-scaling``, ``reference_batch_size``).

A learning rate is tuned for one global batch: the sentences one optimizer step sees, ``--batch-size x
--accumulate`` (``--batch-size`` is already the global batch under torchrun, split across the ranks, so
the number of ranks does not change it). When the batch grows k-fold, the gradient's noise shrinks:

- ``linear`` (SGD): k small steps of SGD move about as far as one step on a k-fold batch with k x the lr
  (Goyal et al. 2017), so ``lr' = lr x k``;
- ``sqrt`` (Adam-type): the update is normalised by the gradient's running scale, and the variance of the
  batch's mean gradient falls as 1/k, so keeping the update's noise level gives ``lr' = lr x sqrt(k)``
  (Malladi et al. 2022; kexue.fm's "how should the learning rate scale with the batch size");
- ``none``: ``lr' = lr``.

``--lr`` and ``--encoder-lr`` are scaled alike; the schedule (warm-up, decay) then works on the scaled ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class LrScaling:
    """One run's rule, its global batch and the batch its learning rates were tuned for."""

    rule: str
    global_batch: int
    reference: int

    @classmethod
    def of(cls, settings: Any) -> LrScaling:
        """The scaling of a resolved :class:`TrainSettings` (its ``lr_scaling`` and ``reference_batch_size``)."""
        return cls(settings.lr_scaling, settings.batch_size * settings.accumulate, settings.reference_batch_size)

    @property
    def factor(self) -> float:
        ratio = self.global_batch / self.reference
        return {"sqrt": ratio ** 0.5, "linear": ratio, "none": 1.0}[self.rule]

    def scaled(self, lr: float | None) -> float | None:
        return None if lr is None else lr * self.factor

    def message(self, lr: float, encoder_lr: float | None = None) -> str | None:
        """The line printed at the start of training; None when the batch is the reference one."""
        if self.global_batch == self.reference:
            return None
        why = f"global batch {self.global_batch} vs reference {self.reference}"
        if self.rule == "none":
            return f"lr {lr:g} kept (no scaling: {why})"
        rates = [f"lr {lr:g} -> {self.scaled(lr):.4g}"]
        if encoder_lr is not None:
            rates.append(f"encoder lr {encoder_lr:g} -> {self.scaled(encoder_lr):.4g}")
        return f"{', '.join(rates)} ({self.rule} scaling: {why})"

    def record(self, lr: float, encoder_lr: float | None = None) -> dict[str, Any]:
        """What the model's ``meta.lr_scaling`` keeps: the rule, both batches, the factor and the rates used."""
        return {"rule": self.rule, "global_batch": self.global_batch, "reference_batch_size": self.reference,
                "factor": self.factor, "lr": self.scaled(lr), "encoder_lr": self.scaled(encoder_lr)}
