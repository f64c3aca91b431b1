"""Maximum-entropy Markov models: locally normalised tag transitions, decoded by Viterbi.

:class:`MEMMDecoder` models ``p(y_t | y_{t-1}, x) = softmax_j(emission_t(j) + W[y_{t-1}, j])``
(``+ start[j]`` in place of ``W`` at ``t = 0``), trained by per-step cross-entropy with the gold
previous tag (teacher forcing) and decoded by Viterbi over the local log-probabilities.
:class:`BiMEMMDecoder` adds a right-to-left MEMM ``p(y_t | y_{t+1}, x)`` on the same encoder
features; it is trained on the sum of both losses and decoded by Viterbi over the sum of both
directions' local log-probabilities of each transition.

Constraints forbid transitions before normalising (their probability is 0, not merely small),
and decoding adds ``-inf`` for every forbidden transition, start and end, so the output is
always valid.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tagpipe.components import Decoder
from tagpipe.corpora.schemes import Constraints
from tagpipe.errors import check_config_keys
from tagpipe.plugins.decoders import chain, forward_backward, viterbi
from tagpipe.plugins.decoders.crf import FORBIDDEN


def _positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def _penalty(allowed: Tensor, fill: float) -> Tensor:
    return torch.zeros(allowed.shape).masked_fill(~allowed, fill)


class LocalModel(nn.Module):
    """One direction of an MEMM: ``p(next | prev, x)`` over ``C`` tags.

    ``allowed[prev, next]`` and ``boundary_ok`` (which tags may open the sequence in this
    direction) are bool masks. ``rank`` factorises ``W = U @ V`` (``[C, rank] @ [rank, C]``).
    """

    def __init__(self, input_dim: int, num_tags: int, allowed: Tensor, boundary_ok: Tensor, rank: int | None):
        super().__init__()
        self.projection = nn.Linear(input_dim, num_tags)
        self.rank = rank
        if rank is None:
            self.weight = nn.Parameter(torch.zeros(num_tags, num_tags))
        else:
            self.left = nn.Parameter(nn.init.normal_(torch.empty(num_tags, rank), std=rank**-0.5))
            self.right = nn.Parameter(torch.zeros(rank, num_tags))
        self.boundary = nn.Parameter(torch.zeros(num_tags))
        # allowed / boundary_ok are CPU masks: the penalties are computed there (chain.penalty)
        self.register_buffer("transition_penalty", chain.penalty(allowed, FORBIDDEN), persistent=False)
        self.register_buffer("boundary_penalty", chain.penalty(boundary_ok, FORBIDDEN), persistent=False)

    def transition_scores(self) -> Tensor:
        """``W`` ``[C_prev, C_next]``."""
        return self.weight if self.rank is None else self.left @ self.right

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """Local log-probabilities from features ``[B, T, D]``: ``boundary [B, T, C]`` (the tag at
        the sequence's first position in this direction, computed at every position) and
        ``pair [B, T, C_prev, C_next]`` (the tag at ``t`` given its neighbour ``prev``)."""
        emissions = self.projection(features)
        emissions = emissions.to(torch.promote_types(emissions.dtype, torch.float32))
        boundary = F.log_softmax(emissions + self.boundary + self.boundary_penalty, dim=-1)
        trans = self.transition_scores() + self.transition_penalty
        # shape: [batch, seq, tags_prev, tags_next]
        pair = F.log_softmax(emissions[:, :, None, :] + trans, dim=-1)
        return boundary, pair


class MEMMDecoder(Decoder):
    """Left-to-right MEMM. Cheap to train (no partition function over sequences); suffers from
    label bias, so the CRF is usually more accurate. Options: ``rank`` (low-rank ``W``)."""

    directions = 1

    def __init__(
        self,
        input_dim: int,
        num_tags: int,
        constraints: Constraints | None = None,
        rank: int | None = None,
        **config: Any,
    ):
        check_config_keys(f"{type(self).__name__} config", config, ("rank",))
        _positive_int("input_dim", input_dim)
        _positive_int("num_tags", num_tags)
        if rank is not None:
            _positive_int("rank", rank)
        super().__init__(input_dim, num_tags, constraints)
        self.rank = rank
        allowed, start, end = chain.constraint_masks(constraints, num_tags, device="cpu")
        self.forward_model = LocalModel(input_dim, num_tags, allowed, start, rank)
        if self.directions == 2:
            self.backward_model = LocalModel(input_dim, num_tags, allowed.T.contiguous(), end, rank)
        device = torch.get_default_device()  # the meta device while Tagger.load sizes the model
        self.register_buffer("allowed", allowed.to(device), persistent=False)
        self.register_buffer("start_ok", start.to(device), persistent=False)
        self.register_buffer("end_ok", end.to(device), persistent=False)

    def config(self) -> dict[str, Any]:
        return {"rank": self.rank}

    def _potentials(self, features: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Chain scores for :mod:`tagpipe.plugins.decoders.chain`: unary ``[B, T, C]`` and per-step transitions
        ``[B, T, C, C]`` (entry ``t`` scores ``y_{t-1} -> y_t``), sums of local log-probabilities."""
        first, pair = self.forward_model(features)
        # shape: [batch, seq, tags]: the forward model's p(y_0) at position 0
        unary = torch.zeros_like(first)
        unary[:, 0] = first[:, 0]
        return unary, pair

    def _check(self, features: Tensor, mask: Tensor) -> None:
        if features.dim() != 3 or features.shape[2] != self.input_dim:
            raise ValueError(f"features must have shape [batch, seq, {self.input_dim}], got {tuple(features.shape)}")
        if mask.shape != features.shape[:2]:
            raise ValueError(f"mask shape {tuple(mask.shape)} does not match features' {tuple(features.shape[:2])}")

    def loss(self, features: Tensor, tags: Tensor, mask: Tensor) -> Tensor:
        """Teacher-forced negative log-likelihood per sequence ``[B]`` (summed over directions)."""
        self._check(features, mask)
        unary, trans = self._potentials(features, mask)
        zero = unary.new_zeros(self.num_tags)
        return -chain.sequence_score(unary, tags, mask, trans, zero, zero)

    def decode(self, features: Tensor, mask: Tensor) -> Tensor:
        self._check(features, mask)
        unary, trans = self._potentials(features, mask)
        inf = float("-inf")
        trans = trans.masked_fill(~self.allowed, inf)
        start, end = _penalty(self.start_ok, inf), _penalty(self.end_ok, inf)
        return viterbi.viterbi_decode(unary, mask, trans, start.to(unary), end.to(unary))

    def marginals(self, features: Tensor, mask: Tensor) -> Tensor:
        """Tag probabilities ``[B, T, C]`` under the model's sequence distribution restricted to
        valid sequences (forward-backward over the local log-probabilities)."""
        self._check(features, mask)
        unary, trans = self._potentials(features, mask)
        start, end = _penalty(self.start_ok, FORBIDDEN), _penalty(self.end_ok, FORBIDDEN)
        return forward_backward.marginals(unary, mask, trans, start.to(unary), end.to(unary))


class BiMEMMDecoder(MEMMDecoder):
    """A left-to-right and a right-to-left MEMM on the same features, trained on the sum of
    both losses; decoding maximises the sum of both directions' local log-probabilities.
    Options: ``rank`` (low-rank transition scores, for large tag sets)."""

    directions = 2

    def _potentials(self, features: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        unary, pair = super()._potentials(features, mask)
        last, back = self.backward_model(features)
        # the backward model's p(y_{n-1}) at each row's last position n - 1
        rows = torch.arange(mask.shape[0], device=mask.device)
        ends = mask.sum(1) - 1
        unary = unary.index_put((rows, ends), last[rows, ends], accumulate=True)
        # transition y_{t-1} = i -> y_t = j also scores p_back(y_{t-1} = i | y_t = j), which
        # back[:, t - 1] holds as [j, i]; entry 0 is unused
        back = torch.cat([torch.zeros_like(back[:, :1]), back[:, :-1].transpose(2, 3)], dim=1)
        return unary, pair + back
