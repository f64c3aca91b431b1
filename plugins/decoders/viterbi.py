"""Viterbi: the best tag sequence of each row, parameter-free (CRF, softmax with constraints, MEMMs).

Shapes and scores are those of :mod:`~tagpipe.plugins.decoders.chain`; forbidden transitions may
be ``-inf``. Three strategies over time, with the same paths: a loop (``T`` small steps), the loop
run from both ends of each row at once, meeting in the middle (``T / 2`` steps over ``2B`` rows),
and a parallel scan (max-plus products with argmax pointers in a balanced tree, then a top-down
pass that reads the path off the tree). ``method="auto"`` picks the fastest for the shapes.
"""

from __future__ import annotations

import torch
from torch import Tensor

from tagpipe.plugins.decoders.chain import (
    check_inputs,
    choose_method,
    pad_pow2,
    pairwise_steps,
    semiring_identity,
    time_major_steps,
    tree_reduce,
    working_dtype,
)

__all__ = ["viterbi_decode"]


def viterbi_decode(
    emissions: Tensor, mask: Tensor, transitions: Tensor, start: Tensor, end: Tensor, method: str = "auto"
) -> Tensor:
    """The best tag sequence per row, ``[B, T]`` long with ``-1`` at padding positions.

    ``method="meet"`` (Viterbi only) runs the loop from both ends of each row at once and meets
    in the middle: half the sequential steps, on twice the rows.
    """
    check_inputs(emissions, mask, transitions, start, end)
    dtype = working_dtype(emissions)
    with torch.no_grad():
        emissions, transitions = emissions.detach().to(dtype), transitions.detach().to(dtype)
        start, end = start.detach().to(dtype), end.detach().to(dtype)
        # shape: [batch, tags]
        first = start + emissions[:, 0]
        if emissions.shape[1] == 1:
            return (first + end).argmax(1, keepdim=True)
        method = choose_method(method, emissions, decoding=True, per_step=transitions.dim() == 4)
        if method == "meet":
            return _viterbi_meet(first, emissions, mask.sum(1), transitions, end)
        if method == "scan":
            best = _viterbi_scan(first, pairwise_steps(emissions, mask, transitions), end)
        else:
            steps = time_major_steps(emissions, mask, transitions, identity=False)
            best = _viterbi_loop(first, steps, end, mask.sum(1))
        return torch.where(mask, best[:, : mask.shape[1]], -1)


def _viterbi_loop(first: Tensor, steps: Tensor, end: Tensor, lengths: Tensor) -> Tensor:
    """first ``[B, C]``, steps ``[N, C, C, B]`` (overwritten), end ``[C]``, lengths ``[B]`` ->
    path ``[B, N + 1]``."""
    final, pointers = _max_forward(first.T, steps.transpose(1, 2), lengths - 1)
    return _backtrace(pointers, (final + end[:, None]).argmax(0)).T


def _max_forward(scores: Tensor, steps: Tensor, last_pos: Tensor) -> tuple[Tensor, Tensor]:
    """The max-plus forward pass of a chain: initial scores ``[C, B]``, steps ``[N, C_to, C_from,
    B]`` (overwritten), each row's last position ``[B]`` -> (each row's best scores at its last
    position ``[C, B]``, back-pointers ``[N, C, B]``, identities from the last position on).

    The time loop computes only the best scores (two cheap ops a step); the back-pointers of all
    steps come afterwards from a few batched ops. With ``C_to`` first, a step's ``[C, B]`` scores
    broadcast over it as they are, so one view per step serves as output, then as input.
    """
    n, c, _, batch = steps.shape
    # shape: [N + 1, tags, batch]
    scores = torch.cat([scores[None], steps.new_empty(n, c, batch)])
    # every step's candidate scores are kept (written in place of the steps), for the pointers
    # views made up front: indexing inside the loop would cost as much as the arithmetic
    each = scores.unbind(0)
    for step, prev, nxt in zip(steps.unbind(0), each[:-1], each[1:], strict=True):
        # shape: [tags_to, tags_from, batch] -> [tags_to, batch]
        torch.amax(step.add_(prev), 1, out=nxt)
    # back-pointer: the first previous tag i whose candidate reaches the max, as the largest rank
    # C - 1 - i among the hits (0 when none, NaN scores: tag C - 1). A comparison into a float
    # tensor is vectorised (into bool it is not, and much slower); so are lerp and amax, unlike
    # where and argmax over a middle dimension. shape: (N, tags_to, batch)
    hit = torch.eq(steps, scores[1:, :, None], out=steps)
    rank = torch.arange(c - 1, -1, -1, dtype=steps.dtype, device=steps.device)
    best = hit.mul_(rank[:, None]).amax(2)
    # from each row's last position on, identities: rank C - 1 - j for tag j
    positions = torch.arange(n, device=steps.device)[:, None, None]
    before = (positions < last_pos).to(steps.dtype)
    pointers = (c - 1 - torch.lerp(rank[:, None], best, before)).long()
    final = scores.gather(0, last_pos[None, None, :].expand(1, c, batch)).squeeze(0)
    return final, pointers


def _viterbi_meet(first: Tensor, emissions: Tensor, lengths: Tensor, transitions: Tensor, end: Tensor) -> Tensor:
    """Like :func:`_viterbi_loop` in ``T // 2`` steps: from both ends at once, meeting in the
    middle. first ``[B, C]``, emissions ``[B, T, C]``, lengths ``[B]`` -> paths ``[B, T]``, ``-1``
    at padding.

    A row of length ``L`` meets at ``m = (L - 1) // 2``. Forward, as in the loop: the best score
    of ``y_0 .. y_m`` ending in each tag, ``m`` steps. Backward: the row reversed within its
    length, a chain from ``y_{L-1}`` (started at ``end``) to ``y_m`` whose step ``k`` adds
    ``transitions[y_{L-k-1}, y_{L-k}] + emissions[L-k, y_{L-k}]`` (the emission of the tag it
    leaves, so ``emissions[m]`` is counted by the forward half only), ``L - 1 - m`` steps. Both
    halves run as one batch of ``2B`` rows; ``y_m`` maximises the sum of their scores, and one
    backtrace of ``2B`` rows reads the left half off the forward pointers and the right half off
    the backward ones.
    """
    batch, seq, c = emissions.shape
    n = seq // 2
    positions = torch.arange(seq, device=lengths.device)
    # shape: [batch, seq]: L - 1 - t, the position the backward chain reaches in t steps
    reverse = (lengths - 1)[:, None] - positions
    # shape: [2 * batch]: where each chain stops: m = (L - 1) // 2 forward, L // 2 backward
    ends = torch.cat([reverse[:, 0], lengths]).div_(2, rounding_mode="floor")
    # shape: [n, batch]: the position L - k that the backward step k reads (anything will do
    # past a row's own steps: its pointers there are identities)
    source = reverse[:, :n].T.clamp(min=0)
    # shape: [seq, tags, batch]; then [n, tags, batch] each
    em = emissions.permute(1, 2, 0).contiguous()
    em_fwd, em_back = em[1 : n + 1], em.gather(0, source[:, None, :].expand(n, c, batch))
    if transitions.dim() == 2:
        trans_fwd, trans_back = transitions.T[None, :, :, None], transitions[None, :, :, None]
    else:
        trans_fwd = transitions[:, 1 : n + 1].permute(1, 3, 2, 0)
        index = source.T[:, :, None, None].expand(batch, n, c, c)
        trans_back = transitions.gather(1, index).permute(1, 2, 3, 0)
    # shape: [n, tags_to, tags_from, 2 * batch]: the forward rows, then the backward ones
    steps = emissions.new_empty(n, c, c, 2 * batch)
    torch.add(trans_fwd, em_fwd[:, :, None], out=steps[..., :batch])
    torch.add(trans_back, em_back[:, None], out=steps[..., batch:])
    scores = torch.cat([first.T, end[:, None].expand(c, batch)], 1)
    final, pointers = _max_forward(scores, steps, ends)
    # shape: [batch]: y_m, the best tag at the meeting position
    middle = (final[:, :batch] + final[:, batch:]).argmax(0)
    # shape: [n + 1, 2 * batch]: the forward rows' y_0 .. y_m, the backward rows' y_{L-1} .. y_m
    path = _backtrace(pointers, torch.cat([middle, middle]))
    # one gather reads y_t at t <= m from the forward half, at t > m from the backward half's
    # position L - 1 - t, and padding (where L - 1 - t < 0) from a block of -1 in between
    width = n + 1
    both = torch.cat([path[:, :batch].T, path.new_full((batch, seq), -1), path[:, batch:].T], 1)
    index = torch.where(positions <= ends[:batch, None], positions, reverse + (width + seq))
    return both.gather(1, index)


def _backtrace(pointers: Tensor, last: Tensor) -> Tensor:
    """Follow back-pointers ``[N, C, B]`` (``pointers[q, j]``: tag at ``q`` given ``j`` at ``q+1``)
    from the last tag ``[B]``; returns the path ``[N + 1, B]``, time-major.

    One small gather a step: measured faster than reading all chunks of ``sqrt(N)`` steps at
    once, whose bigger gathers cost more than they save, even at ``N = 127``.
    """
    path = [last[None, :]]
    for step in reversed(pointers.unbind(0)):
        path.append(step.gather(0, path[-1]))
    path.reverse()
    return torch.cat(path)


def _viterbi_scan(first: Tensor, steps: Tensor, end: Tensor) -> Tensor:
    """Like :func:`_viterbi_loop` in ``log2 N`` tree levels; returns ``[B, N' + 1]``, ``N' >= N``."""
    batch, _, c, _ = steps.shape
    steps = pad_pow2(steps, semiring_identity(c, first))
    size = steps.shape[1]
    product, pointers = tree_reduce(steps, "max")
    # shape: [batch, tags * tags]: best over the whole chain from y_0 = i to y_last = j
    flat = (first[:, :, None] + product + end).flatten(1).argmax(1)
    path = first.new_zeros(batch, size + 1, dtype=torch.long)
    path[:, 0], path[:, size] = flat // c, flat % c
    stride = size
    for middle in reversed(pointers):
        # each node of this level spans `stride` steps; its middle tag splits it in two.
        left, right = path[:, 0:size:stride], path[:, stride::stride]
        # shape: [batch, nodes]
        mid = middle.flatten(2).gather(2, (left * c + right)[:, :, None]).squeeze(2)
        path[:, stride // 2 :: stride] = mid
        stride //= 2
    return path
