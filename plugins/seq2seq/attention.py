"""The UniLM attention mask and the packed batch it reads: shared by the model and generation.

Kept apart from :mod:`tagpipe.plugins.seq2seq.model` so that generation (which steps the model)
and the model (which offers ``generate``) do not import each other.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

KeyValues = list[tuple[Tensor, Tensor]]  # per layer: keys, values [N, heads, L, head_dim]


@dataclass
class Packed:
    """A batch packed for the UniLM mask. All ``[N, S + T]``; ``source_width`` is ``S``."""

    input_ids: Tensor
    segment_ids: Tensor
    position_ids: Tensor
    valid: Tensor  # bool: a real token (not padding)
    source_width: int


def unilm_mask(segment_ids: Tensor, valid: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """The additive attention mask ``[N, 1, L, L]``: 0 where query ``i`` may see key ``j``.

    Allowed: ``j`` is a real token and either in the source (segment 0), or in the target with
    ``j <= i`` while ``i`` is a target token. Padding queries see themselves (no empty rows).
    """
    length = segment_ids.shape[1]
    source_key = (segment_ids == 0)[:, None, :]  # shape: [N, 1, L]
    target_query = (segment_ids == 1)[:, :, None]  # shape: [N, L, 1]
    causal = torch.ones(length, length, dtype=torch.bool, device=segment_ids.device).tril()  # shape: [L, L]
    allowed = (source_key | (target_query & causal)) & valid[:, None, :]  # shape: [N, L, L]
    allowed = allowed | torch.eye(length, dtype=torch.bool, device=segment_ids.device)
    zero = torch.zeros((), dtype=dtype, device=segment_ids.device)
    return torch.where(allowed, zero, torch.finfo(dtype).min)[:, None]  # shape: [N, 1, L, L]
