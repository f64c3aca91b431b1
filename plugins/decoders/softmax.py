"""The per-token softmax decoder: each tag predicted independently from its token's features."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tagpipe.components import Decoder
from tagpipe.corpora.schemes import Constraints
from tagpipe.errors import check_config_keys
from tagpipe.plugins.decoders import chain, viterbi


class SoftmaxDecoder(Decoder):
    """``Linear(input_dim, num_tags)`` and a softmax per token.

    Loss: cross-entropy summed over each sequence's tokens, ``[B]``. Decoding: the most likely
    tag per token; with constraints, the most likely *valid* sequence under the product of the
    per-token probabilities (Viterbi with 0 / -inf transition scores). The fastest decoder and
    a good one for tag sets without structure (POS tags); prefer the CRF for spans.
    """

    def __init__(self, input_dim: int, num_tags: int, constraints: Constraints | None = None, **config: Any):
        check_config_keys("softmax decoder config", config, ())
        for name, value in (("input_dim", input_dim), ("num_tags", num_tags)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        super().__init__(input_dim, num_tags, constraints)
        self.projection = nn.Linear(input_dim, num_tags)
        allowed, start, end = chain.constraint_masks(constraints, num_tags, device="cpu")
        self.constrained = constraints is not None
        # shape: [tags, tags], [tags], [tags]: 0 where allowed, -inf where forbidden
        for name, ok in (("transition_penalty", allowed), ("start_penalty", start), ("end_penalty", end)):
            self.register_buffer(name, chain.penalty(ok, float("-inf")), persistent=False)

    def config(self) -> dict[str, Any]:
        return {}

    def _log_probs(self, features: Tensor) -> Tensor:
        # shape: [batch, seq, tags], float32 at least
        logits = self.projection(features)
        return F.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1)

    def loss(self, features: Tensor, tags: Tensor, mask: Tensor) -> Tensor:
        log_probs = self._log_probs(features)
        # shape: [batch, seq]
        picked = log_probs.gather(2, tags.masked_fill(~mask, 0)[:, :, None]).squeeze(2)
        return -(picked * mask).sum(1)

    def decode(self, features: Tensor, mask: Tensor) -> Tensor:
        log_probs = self._log_probs(features)
        if not self.constrained:
            return log_probs.argmax(-1).masked_fill(~mask, -1)
        penalties = (self.transition_penalty, self.start_penalty, self.end_penalty)
        return viterbi.viterbi_decode(log_probs, mask, *penalties)

    def marginals(self, features: Tensor, mask: Tensor) -> Tensor:
        return self._log_probs(features).exp() * mask[:, :, None]
