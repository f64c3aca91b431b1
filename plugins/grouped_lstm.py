"""Bidirectional LSTM inference on CPU without packed sequences: rows grouped by length.

Why: on CPU, ``nn.LSTM`` over a ``PackedSequence`` runs the slow generic loop, while a padded
batch takes the fused oneDNN kernel (about 1.7x faster per token). Padding a whole batch of
real sentences wastes more than that (a batch of 128 CoNLL sentences pads ~14 tokens on average
to ~50), so the rows are first split into groups of similar length, each run padded.

The backward direction must start at each row's own last token, not at the padding: each row is
reversed within its length, run through the backward weights as a forward LSTM, and reversed
back. The result equals the packed bidirectional LSTM to float rounding (tested), so models
trained with packing predict the same.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

GROUP_ROWS = 16  # rows per group, taken in order of length: small enough for little padding
STEP_BUCKET = 4  # group lengths are rounded up to a multiple of this, so few shapes ever occur


def run_bilstm(lstm: nn.LSTM, x: Tensor, lengths: Tensor) -> Tensor:
    """``lstm`` (bidirectional, batch-first) over ``x`` ``[B, T, D]``: ``[B, T, 2H]``, zeros past
    each row's length. Packed when training, on GPU or under autocast; grouped otherwise."""
    plain = lstm.bias and not lstm.proj_size and lstm.bidirectional and lstm.batch_first
    if plain and not lstm.training and x.device.type == "cpu" and not torch.is_autocast_enabled("cpu"):
        return bilstm_by_groups(lstm, x, lengths)
    packed = pack_padded_sequence(x, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)
    out, _ = lstm(packed)
    out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
    mask = torch.arange(x.shape[1], device=out.device)[None, :] < lengths.to(out.device)[:, None]
    return out * mask[:, :, None]  # zero-length rows ran one padding step: blank them


def length_groups(lengths: list[int], rows: int = GROUP_ROWS) -> list[list[int]]:
    """Row indices, longest first, in groups of ``rows`` (the last may be smaller)."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__, reverse=True)
    return [order[i : i + rows] for i in range(0, len(order), rows)]


def bilstm_by_groups(lstm: nn.LSTM, x: Tensor, lengths: Tensor) -> Tensor:
    """``lstm`` (bidirectional, batch-first, eval mode) over ``x`` ``[B, T, D]`` whose rows have
    ``lengths``; ``[B, T, 2H]`` with zeros past each row's length.

    oneDNN builds a kernel ("primitive") per input shape and caches it; building one costs about
    as much as running it. Groups of fixed size with lengths in buckets of ``STEP_BUCKET`` keep
    the number of shapes small (rows 1..16 x lengths/4), so after a few batches all are cached.
    """
    batch, seq, dim = x.shape
    out = x.new_zeros(batch, seq, 2 * lstm.hidden_size)
    length_list = lengths.tolist()
    for group in length_groups(length_list):
        longest = length_list[group[0]]
        if longest == 0:
            break
        rows = torch.tensor(group, device=x.device)
        steps = min(longest, seq)
        padded = x.new_zeros(len(group), -(-longest // STEP_BUCKET) * STEP_BUCKET, dim)
        padded[:, :steps] = x[rows, :steps]
        out[rows, :steps] = _bidirectional(lstm, padded, lengths[rows].to(x.device))[:, :steps]
    mask = torch.arange(seq, device=x.device)[None, :] < lengths.to(x.device)[:, None]
    return out * mask[:, :, None]  # the forward direction ran on past shorter rows' ends


def _bidirectional(lstm: nn.LSTM, x: Tensor, lengths: Tensor) -> Tensor:
    """All layers of ``lstm`` over a padded group, each direction run as a forward LSTM."""
    seq = x.shape[1]
    steps = torch.arange(seq, device=x.device)[None, :]
    # position t of a reversed row reads position length-1-t; padding positions stay in place
    flip = torch.where(steps < lengths[:, None], lengths[:, None] - 1 - steps, steps)
    for layer in range(lstm.num_layers):
        forward = _one_direction(lstm, x, layer, "")
        backward = _one_direction(lstm, _gather_steps(x, flip), layer, "_reverse")
        x = torch.cat([forward, _gather_steps(backward, flip)], dim=2)
    return x


def _one_direction(lstm: nn.LSTM, x: Tensor, layer: int, suffix: str) -> Tensor:
    weights = [getattr(lstm, f"{name}_l{layer}{suffix}") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
    zeros = x.new_zeros(1, x.shape[0], lstm.hidden_size)
    out, _, _ = torch.lstm(x, (zeros, zeros), weights, True, 1, 0.0, False, False, True)
    return out


def _gather_steps(x: Tensor, index: Tensor) -> Tensor:
    return x.gather(1, index[:, :, None].expand(-1, -1, x.shape[2]))
