"""A linear-chain conditional random field, and the decoder that puts it on top of an encoder.

:class:`CRF` holds only parameters (transition, start and end scores) and the optional
constraints; the algorithms are in :mod:`~tagpipe.plugins.decoders.viterbi`,
:mod:`~tagpipe.plugins.decoders.forward_backward` and :mod:`~tagpipe.plugins.decoders.chain`.
Forbidden transitions score :data:`FORBIDDEN` in training (a finite constant, so gradients stay
finite) and ``-inf`` in decoding, so an invalid sequence is never output, even right after random
initialisation.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from tagpipe.components import Decoder
from tagpipe.corpora.schemes import Constraints
from tagpipe.errors import check_config_keys
from tagpipe.plugins.decoders import chain, forward_backward, viterbi

#: score of a forbidden transition during training: its paths weigh exp(-1e4) = 0 in log Z
FORBIDDEN = -1e4


class CRF(nn.Module):
    """Linear-chain CRF over ``num_tags`` tags.

    Scores ``start[y_0] + sum_t emissions[t, y_t] + sum_t transitions[y_{t-1}, y_t] + end[y_n-1]``.
    Inputs are batch first: emissions ``[B, T, C]``, tags ``[B, T]`` long, mask ``[B, T]`` bool
    whose ones are a prefix of each row, with ``mask[:, 0]`` all True (no empty sequences).
    """

    def __init__(self, num_tags: int, constraints: Constraints | None = None) -> None:
        super().__init__()
        if isinstance(num_tags, bool) or not isinstance(num_tags, int) or num_tags <= 0:
            raise ValueError(f"num_tags must be a positive int, got {num_tags!r}")
        self.num_tags = num_tags
        self.transitions = nn.Parameter(torch.empty(num_tags, num_tags))
        self.start_transitions = nn.Parameter(torch.empty(num_tags))
        self.end_transitions = nn.Parameter(torch.empty(num_tags))
        allowed, start, end = chain.constraint_masks(constraints, num_tags)
        # not learnable and not saved: they are rebuilt from the constraints
        self.register_buffer("allowed_transitions", allowed, persistent=False)
        self.register_buffer("allowed_start", start, persistent=False)
        self.register_buffer("allowed_end", end, persistent=False)
        self.constrained = constraints is not None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Uniform in [-0.1, 0.1], as pytorch-crf."""
        for param in (self.transitions, self.start_transitions, self.end_transitions):
            nn.init.uniform_(param, -0.1, 0.1)

    def extra_repr(self) -> str:
        return f"num_tags={self.num_tags}, constrained={self.constrained}"

    def scores(self, hard: bool) -> tuple[Tensor, Tensor, Tensor]:
        """``(transitions [C, C], start [C], end [C])`` with forbidden entries at ``-inf``
        (``hard``) or :data:`FORBIDDEN`."""
        if not self.constrained:
            return self.transitions, self.start_transitions, self.end_transitions
        fill = float("-inf") if hard else FORBIDDEN
        return (
            self.transitions.masked_fill(~self.allowed_transitions, fill),
            self.start_transitions.masked_fill(~self.allowed_start, fill),
            self.end_transitions.masked_fill(~self.allowed_end, fill),
        )

    def _check(self, emissions: Tensor, mask: Tensor | None) -> Tensor:
        if emissions.dim() != 3:
            raise ValueError(f"emissions must have 3 dimensions [batch, seq, tags], got {emissions.dim()}")
        if emissions.shape[2] != self.num_tags:
            raise ValueError(f"expected {self.num_tags} tags in emissions' last dimension, got {emissions.shape[2]}")
        if mask is None:
            return torch.ones(emissions.shape[:2], dtype=torch.bool, device=emissions.device)
        return mask

    def nll(self, emissions: Tensor, tags: Tensor, mask: Tensor | None = None) -> Tensor:
        """Negative log-likelihood of ``tags`` per sequence, ``[B]``."""
        mask = self._check(emissions, mask)
        transitions, start, end = self.scores(hard=False)
        log_z = forward_backward.log_partition(emissions, mask, transitions, start, end)
        return log_z - chain.sequence_score(emissions, tags, mask, transitions, start, end)

    def decode(self, emissions: Tensor, mask: Tensor | None = None) -> Tensor:
        """Best tag sequences ``[B, T]`` long, ``-1`` at padding; valid under the constraints."""
        mask = self._check(emissions, mask)
        return viterbi.viterbi_decode(emissions, mask, *self.scores(hard=True))

    def marginals(self, emissions: Tensor, mask: Tensor | None = None) -> Tensor:
        """Per-token tag probabilities ``[B, T, C]`` (0 at padding)."""
        mask = self._check(emissions, mask)
        return forward_backward.marginals(emissions, mask, *self.scores(hard=False))


class CRFDecoder(Decoder):
    """``Linear(input_dim, num_tags)`` emissions followed by a :class:`CRF`.

    The usual choice for span tagging (NER, chunking): trained on the sequence likelihood, so
    it learns which tag follows which; decoding is exact Viterbi.
    """

    def __init__(self, input_dim: int, num_tags: int, constraints: Constraints | None = None, **config: Any):
        check_config_keys("crf decoder config", config, ())
        if isinstance(input_dim, bool) or not isinstance(input_dim, int) or input_dim <= 0:
            raise ValueError(f"input_dim must be a positive int, got {input_dim!r}")
        super().__init__(input_dim, num_tags, constraints)
        self.crf = CRF(num_tags, constraints)
        self.projection = nn.Linear(input_dim, num_tags)

    def config(self) -> dict[str, Any]:
        return {}

    def loss(self, features: Tensor, tags: Tensor, mask: Tensor) -> Tensor:
        return self.crf.nll(self.projection(features), tags, mask)

    def decode(self, features: Tensor, mask: Tensor) -> Tensor:
        return self.crf.decode(self.projection(features), mask)

    def marginals(self, features: Tensor, mask: Tensor) -> Tensor:
        return self.crf.marginals(self.projection(features), mask)
