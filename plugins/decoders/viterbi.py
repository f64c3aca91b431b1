"""Parameter-free chain algorithms shared by the CRF, softmax and MEMM decoders.

Every function scores tag sequences ``y_0 .. y_{n-1}`` (``n`` = a row's length) as::

    start[y_0] + sum_t emissions[t, y_t] + sum_{t>=1} transitions[y_{t-1}, y_t] + end[y_{n-1}]

Shapes (``B`` batch, ``T`` longest sequence, ``C`` tags):

- ``emissions``: ``[B, T, C]`` (float32, float64 or bf16; computed in float32 at least);
- ``mask``: ``[B, T]`` bool whose ones are a prefix of each row; **every row must have length
  at least 1** (``mask[:, 0]`` all True), as in pytorch-crf;
- ``transitions``: ``[C, C]`` (``transitions[i, j]`` scores tag ``i`` followed by ``j``), or
  ``[B, T, C, C]`` for per-step scores (entry ``t`` scores ``y_{t-1} -> y_t``; entry 0 unused),
  which is what MEMMs need;
- ``start``, ``end``: ``[C]``.

Forbidden transitions may be ``-inf`` for decoding and marginals. For :func:`log_partition`
gradients use a large negative *finite* constant instead (a tag that only ``-inf`` leads to
makes the gradient NaN).

Strategies over time, with the same results: a loop (``T`` small steps, time-major layout
with the batch innermost); for Viterbi only, the loop run from both ends of each row at once,
meeting in the middle (``T / 2`` steps over ``2B`` rows); and a parallel scan (a balanced tree
of ``[C, C]`` semiring matrix products, ``log2 T`` big steps; max-plus with argmax pointers for
Viterbi, then a top-down pass that reads the path off the tree). Padded steps become identity
matrices, so rows of different lengths share one scan. ``method="auto"`` picks the fastest for
the shapes.
"""

from __future__ import annotations

import torch
from tagpipe.corpora.schemes import Constraints
from torch import Tensor

__all__ = ["constraint_masks", "log_partition", "marginals", "sequence_score", "viterbi_decode"]

METHODS = ("auto", "loop", "meet", "scan")


def _check(emissions: Tensor, mask: Tensor, transitions: Tensor, start: Tensor, end: Tensor) -> None:
    if emissions.dim() != 3:
        raise ValueError(f"emissions must have 3 dimensions [batch, seq, tags], got {emissions.dim()}")
    batch, seq, num_tags = emissions.shape
    if seq == 0:
        raise ValueError("emissions have sequence length 0; every sequence needs at least one token")
    if mask.shape != (batch, seq):
        raise ValueError(f"mask shape {tuple(mask.shape)} does not match emissions' [batch, seq] {(batch, seq)}")
    if mask.dtype != torch.bool:
        raise ValueError(f"mask must be a bool tensor, got {mask.dtype}")
    if transitions.shape not in ((num_tags, num_tags), (batch, seq, num_tags, num_tags)):
        raise ValueError(
            f"transitions must have shape {(num_tags, num_tags)} or {(batch, seq, num_tags, num_tags)}, "
            f"got {tuple(transitions.shape)}"
        )
    for name, vec in (("start", start), ("end", end)):
        if vec.shape != (num_tags,):
            raise ValueError(f"{name} must have shape {(num_tags,)}, got {tuple(vec.shape)}")
    if batch and not bool(mask[:, 0].all()):
        raise ValueError("mask[:, 0] must be all True: every sequence needs at least one token")


def _dtype(emissions: Tensor) -> torch.dtype:
    return torch.promote_types(emissions.dtype, torch.float32)


def _identity(c: int, like: Tensor) -> Tensor:
    """The semiring identity ``[C, C]``: 0 on the diagonal, -inf elsewhere (max-plus and log)."""
    eye = torch.eye(c, dtype=torch.bool, device=like.device)
    return torch.zeros(c, c, dtype=like.dtype, device=like.device).masked_fill(~eye, float("-inf"))


def _pairwise(emissions: Tensor, mask: Tensor, transitions: Tensor) -> Tensor:
    """Step matrices ``[B, T-1, C, C]``: entry ``q`` maps ``y_q -> y_{q+1}``; identity where padded."""
    trans = transitions if transitions.dim() == 2 else transitions[:, 1:]
    # shape: (batch, seq - 1, tags, tags)
    steps = trans + emissions[:, 1:, None, :]
    return torch.where(mask[:, 1:, None, None], steps, _identity(emissions.shape[2], emissions))


def _steps_time_major(emissions: Tensor, mask: Tensor, transitions: Tensor, identity: bool) -> Tensor:
    """Step matrices ``[T-1, C_from, C_to, B]``, batch innermost, contiguous.

    With the batch innermost, each step of a loop is one broadcast add and one reduction over
    the outermost dimension, both vectorised along ``C_to * B`` contiguous floats. Padded steps
    are identities when ``identity`` is set (else left as they come: the caller reads each row
    at its own length).
    """
    batch, seq, c = emissions.shape
    # shape: (seq, tags, batch)
    em = emissions.permute(1, 2, 0).contiguous()
    if transitions.dim() == 2:
        trans = transitions[None, :, :, None]
    else:
        trans = transitions[:, 1:].permute(1, 2, 3, 0).contiguous()
    steps = (trans + em[1:, None]).contiguous()
    if identity:
        eye = _identity(c, emissions)[None, :, :, None]
        steps = torch.where(mask.T[1:, None, None, :], steps, eye)
    return steps


def _pad_pow2(steps: Tensor, identity: Tensor) -> Tensor:
    """Pad ``[B, N, C, C]`` with identities to a power-of-two ``N``."""
    n = steps.shape[1]
    size = 1 << max(n - 1, 0).bit_length()
    if size == n:
        return steps
    pad = identity.expand(steps.shape[0], size - n, *identity.shape)
    return torch.cat([steps, pad], dim=1)


def _choose(method: str, emissions: Tensor, decoding: bool, per_step: bool = False) -> str:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
    if method == "meet" and not decoding:
        raise ValueError("method 'meet' is for Viterbi decoding only; use 'loop' or 'scan'")
    if method != "auto":
        return method
    # The scan does C times the loop's arithmetic (B * T * C^3) in log2(T) big steps instead of
    # T small ones. Measured on a 2-core CPU it wins only where B * C^3 is tiny (a few long
    # sentences, few tags), more easily for log Z, whose loop steps cost more under autograd.
    batch, seq, c = emissions.shape
    if seq >= 16 and batch * c**3 <= (256 if decoding else 1024):
        return "scan"
    # Meeting in the middle saves T / 2 loop steps of fixed cost (~4 us each) for ~25 more small
    # ops; it loses where a step of 2B rows outgrows the cache (B * C^2 over ~16k floats) or
    # per-step transitions must be gathered.
    if decoding and not per_step and seq >= 24 and batch * c * c <= 16384:
        return "meet"
    return "loop"


# --------------------------------------------------------------------------------------------
# partition function and scores


def log_partition(
    emissions: Tensor, mask: Tensor, transitions: Tensor, start: Tensor, end: Tensor, method: str = "auto"
) -> Tensor:
    """``log Z`` per sequence ``[B]``: log-sum-exp of the scores of all tag sequences (forward
    algorithm). Differentiable; in float32 at least, float64 when given float64."""
    _check(emissions, mask, transitions, start, end)
    dtype = _dtype(emissions)
    emissions, transitions = emissions.to(dtype), transitions.to(dtype)
    start, end = start.to(dtype), end.to(dtype)
    # shape: (batch, tags)
    first = start + emissions[:, 0]
    if emissions.shape[1] == 1:
        return torch.logsumexp(first + end, dim=1)
    if _choose(method, emissions, decoding=False) == "scan":
        steps = _pad_pow2(_pairwise(emissions, mask, transitions), _identity(emissions.shape[2], emissions))
        # shape: (batch, tags, tags)
        total = _tree_reduce(steps, "log")
        return torch.logsumexp((first[:, :, None] + total + end).flatten(1), dim=1)
    steps = _steps_time_major(emissions, mask, transitions, identity=True)
    floor = torch.finfo(dtype).min
    # shape: (tags, batch)
    alpha = first.T
    for step in steps.unbind(0):
        # log-sum-exp over the previous tag, by hand: torch.logsumexp enters a thread pool
        # at every call, which costs more than the arithmetic at these sizes.
        # shape: (tags_from, tags_to, batch)
        scores = step + alpha[:, None, :]
        # the shift carries no gradient (log-sum-exp does not depend on it)
        shift = scores.detach().amax(0).clamp_(min=floor)
        alpha = (scores - shift).exp().sum(0).log() + shift
    return torch.logsumexp(alpha + end[:, None], dim=0)


def sequence_score(
    emissions: Tensor, tags: Tensor, mask: Tensor, transitions: Tensor, start: Tensor, end: Tensor
) -> Tensor:
    """Score ``[B]`` of the given ``tags`` ``[B, T]`` (values at padding are ignored)."""
    _check(emissions, mask, transitions, start, end)
    if tags.shape != mask.shape:
        raise ValueError(f"tags shape {tuple(tags.shape)} does not match mask shape {tuple(mask.shape)}")
    if tags.dtype != torch.long:
        raise ValueError(f"tags must be a long tensor, got {tags.dtype}")
    dtype = _dtype(emissions)
    emissions, transitions = emissions.to(dtype), transitions.to(dtype)
    tags = tags.masked_fill(~mask, 0)
    num_tags = emissions.shape[2]
    if bool(((tags < 0) | (tags >= num_tags)).any()):
        raise ValueError(f"tags must lie in [0, {num_tags}) at unmasked positions")
    zero = emissions.new_zeros(())
    # shape: (batch, seq)
    unary = torch.where(mask, emissions.gather(2, tags[:, :, None]).squeeze(2), zero)
    prev, nxt = tags[:, :-1], tags[:, 1:]
    if transitions.dim() == 2:
        # shape: (batch, seq - 1)
        pair = transitions[prev, nxt]
    else:
        steps = transitions[:, 1:].flatten(2)
        pair = steps.gather(2, (prev * num_tags + nxt)[:, :, None]).squeeze(2)
    pair = torch.where(mask[:, 1:], pair, zero)
    last = tags.gather(1, (mask.sum(1) - 1)[:, None]).squeeze(1)
    return start.to(dtype)[tags[:, 0]] + unary.sum(1) + pair.sum(1) + end.to(dtype)[last]


def marginals(
    emissions: Tensor, mask: Tensor, transitions: Tensor, start: Tensor, end: Tensor, method: str = "auto"
) -> Tensor:
    """Per-token tag probabilities ``[B, T, C]`` (forward-backward); rows sum to 1, padding
    positions are 0. Not differentiable; works under ``torch.inference_mode``."""
    _check(emissions, mask, transitions, start, end)
    dtype = _dtype(emissions)
    emissions, transitions = emissions.detach().to(dtype), transitions.detach().to(dtype)
    start, end = start.detach().to(dtype), end.detach().to(dtype)
    if _choose(method, emissions, decoding=False) == "scan" and not torch.is_inference_mode_enabled():
        # the gradient of log Z with respect to the emissions
        with torch.enable_grad():
            em = emissions.requires_grad_(True)
            (grad,) = torch.autograd.grad(log_partition(em, mask, transitions, start, end, "scan").sum(), em)
        return grad
    with torch.no_grad():
        if transitions.dim() != 2:  # per-step transitions (MEMMs): no shared matrix to factor out
            return _log_forward_backward(emissions, mask, transitions, start, end)
        probs = _scaled_forward_backward(emissions, mask, transitions, start, end)
        if not bool(torch.isfinite(probs).all()):
            # every path of a row underflowed a step (scores ~90 apart in float32): log space
            probs = _log_forward_backward(emissions, mask, transitions, start, end)
        return probs


def _scaled_forward_backward(
    emissions: Tensor, mask: Tensor, transitions: Tensor, start: Tensor, end: Tensor
) -> Tensor:
    """Forward-backward in probability space, rescaled at every step (the scaled HMM recursion).

    A step's matrix ``exp(transitions[i, j] + emissions[t, j])`` factors into ``exp(transitions)``
    (one ``[C, C]`` matrix) times ``exp(emissions[t])``, so each step is a small matrix product,
    a multiply and a normalisation, with no ``[T, C, C, B]`` temporaries and no log/exp in the
    loop: about 10x faster than a log-space loop at NER sizes, and more accurate in float32.
    Both factors are shifted by their maximum and ``alpha``/``beta`` renormalised to sum 1, so
    nothing overflows; their unknown scales cancel in the per-position normalisation.
    """
    batch, seq, c = emissions.shape
    floor = torch.finfo(emissions.dtype).min
    trans = (transitions - transitions.amax().clamp(min=floor)).exp()  # shape: (from, to)
    trans_t = trans.T.contiguous()
    # shape: (seq, tags, batch)
    emit = emissions.permute(1, 2, 0)
    emit = (emit - emit.amax(1, keepdim=True).clamp_(min=floor)).exp_()
    valid = mask.T[:, None, :]  # shape: (seq, 1, batch); padded steps carry alpha and beta through
    first = start[:, None] + emissions[:, 0].T
    alpha = (first - first.amax(0).clamp_(min=floor)).exp_()
    alphas = [alpha / alpha.sum(0)]
    for t in range(1, seq):
        alpha = torch.mm(trans_t, alphas[-1]).mul_(emit[t])
        alphas.append(torch.where(valid[t], alpha.div_(alpha.sum(0)), alphas[-1]))
    betas = [(end - end.amax().clamp(min=floor)).exp()[:, None].expand(c, batch)]
    for t in range(seq - 1, 0, -1):
        beta = torch.mm(trans, emit[t] * betas[-1])
        betas.append(torch.where(valid[t], beta.div_(beta.sum(0)), betas[-1]))
    betas.reverse()
    both = torch.stack(alphas).mul_(torch.stack(betas))
    both = both.div_(both.sum(1, keepdim=True))
    return both.permute(2, 0, 1) * mask[:, :, None]


def _log_forward_backward(
    emissions: Tensor, mask: Tensor, transitions: Tensor, start: Tensor, end: Tensor
) -> Tensor:
    """The same marginals in log space: slower, but no step can underflow."""
    floor = torch.finfo(emissions.dtype).min
    steps = _steps_time_major(emissions, mask, transitions, identity=True)
    # shape: (tags, batch)
    alphas = [(start + emissions[:, 0]).T.contiguous()]
    for step in steps.unbind(0):
        alphas.append(_logsumexp(step + alphas[-1][:, None, :], 0, floor))
    # identity steps past each row's end carry `end` back to its last token
    betas = [end[:, None].expand(-1, emissions.shape[0])]
    for step in reversed(steps.unbind(0)):
        betas.append(_logsumexp(step + betas[-1][None, :, :], 1, floor))
    betas.reverse()
    # shape: (seq, tags, batch)
    both = torch.stack(alphas) + torch.stack(betas)
    log_z = torch.logsumexp(both[0], dim=0)
    return (both - log_z).exp_().permute(2, 0, 1) * mask[:, :, None]


def _logsumexp(scores: Tensor, dim: int, floor: float) -> Tensor:
    """``torch.logsumexp`` without autograd, by hand: the builtin enters the thread pool at
    every call, which costs more than the arithmetic at these sizes."""
    shift = scores.amax(dim).clamp_(min=floor)
    return (scores - shift.unsqueeze(dim)).exp_().sum(dim).log_().add_(shift)


# --------------------------------------------------------------------------------------------
# Viterbi


def viterbi_decode(
    emissions: Tensor, mask: Tensor, transitions: Tensor, start: Tensor, end: Tensor, method: str = "auto"
) -> Tensor:
    """The best tag sequence per row, ``[B, T]`` long with ``-1`` at padding positions.

    ``method="meet"`` (Viterbi only) runs the loop from both ends of each row at once and meets
    in the middle: half the sequential steps, on twice the rows.
    """
    _check(emissions, mask, transitions, start, end)
    dtype = _dtype(emissions)
    with torch.no_grad():
        emissions, transitions = emissions.detach().to(dtype), transitions.detach().to(dtype)
        start, end = start.detach().to(dtype), end.detach().to(dtype)
        # shape: (batch, tags)
        first = start + emissions[:, 0]
        if emissions.shape[1] == 1:
            return (first + end).argmax(1, keepdim=True)
        method = _choose(method, emissions, decoding=True, per_step=transitions.dim() == 4)
        if method == "meet":
            return _viterbi_meet(first, emissions, mask.sum(1), transitions, end)
        if method == "scan":
            best = _viterbi_scan(first, _pairwise(emissions, mask, transitions), end)
        else:
            steps = _steps_time_major(emissions, mask, transitions, identity=False)
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
    # shape: (N + 1, tags, batch)
    scores = torch.cat([scores[None], steps.new_empty(n, c, batch)])
    # every step's candidate scores are kept (written in place of the steps), for the pointers
    # views made up front: indexing inside the loop would cost as much as the arithmetic
    each = scores.unbind(0)
    for step, prev, nxt in zip(steps.unbind(0), each[:-1], each[1:], strict=True):
        # shape: (tags_to, tags_from, batch) -> (tags_to, batch)
        torch.amax(step.add_(prev), 1, out=nxt)
    # back-pointer: the first previous tag i whose candidate reaches the max, as the largest rank
    # C - 1 - i among the hits (0 when none, NaN scores: tag C - 1). A comparison into a float
    # tensor is vectorised (into bool it is not, and 6x slower); so are lerp and amax, unlike
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
    # shape: (batch, seq): L - 1 - t, the position the backward chain reaches in t steps
    reverse = (lengths - 1)[:, None] - positions
    # shape: (2 * batch,): where each chain stops: m = (L - 1) // 2 forward, L // 2 backward
    ends = torch.cat([reverse[:, 0], lengths]).div_(2, rounding_mode="floor")
    # shape: (n, batch): the position L - k that the backward step k reads (anything will do
    # past a row's own steps: its pointers there are identities)
    source = reverse[:, :n].T.clamp(min=0)
    # shape: (seq, tags, batch); then (n, tags, batch) each
    em = emissions.permute(1, 2, 0).contiguous()
    em_fwd, em_back = em[1 : n + 1], em.gather(0, source[:, None, :].expand(n, c, batch))
    if transitions.dim() == 2:
        trans_fwd, trans_back = transitions.T[None, :, :, None], transitions[None, :, :, None]
    else:
        trans_fwd = transitions[:, 1 : n + 1].permute(1, 3, 2, 0)
        index = source.T[:, :, None, None].expand(batch, n, c, c)
        trans_back = transitions.gather(1, index).permute(1, 2, 3, 0)
    # shape: (n, tags_to, tags_from, 2 * batch): the forward rows, then the backward ones
    steps = emissions.new_empty(n, c, c, 2 * batch)
    torch.add(trans_fwd, em_fwd[:, :, None], out=steps[..., :batch])
    torch.add(trans_back, em_back[:, None], out=steps[..., batch:])
    scores = torch.cat([first.T, end[:, None].expand(c, batch)], 1)
    final, pointers = _max_forward(scores, steps, ends)
    # shape: (batch,): y_m, the best tag at the meeting position
    middle = (final[:, :batch] + final[:, batch:]).argmax(0)
    # shape: (n + 1, 2 * batch): the forward rows' y_0 .. y_m, the backward rows' y_{L-1} .. y_m
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


def _tree_reduce(steps: Tensor, semiring: str) -> Tensor | tuple[Tensor, list[Tensor]]:
    """Product of ``[B, N, C, C]`` step matrices (``N`` a power of two) as a balanced tree.

    ``"log"``: returns the log-semiring product ``[B, C, C]``. ``"max"``: returns the max-plus
    product and, per tree level (bottom first), the argmax of the shared middle tag
    ``[B, N / 2**level, C, C]``.
    """
    pointers: list[Tensor] = []
    while steps.shape[1] > 1:
        # shape: (batch, n / 2, tags_i, tags_k, tags_j)
        joint = steps[:, 0::2, :, :, None] + steps[:, 1::2, None, :, :]
        if semiring == "log":
            steps = torch.logsumexp(joint, dim=3)
        else:
            steps, middle = joint.max(dim=3)
            pointers.append(middle)
    product = steps[:, 0]
    return product if semiring == "log" else (product, pointers)


def _viterbi_scan(first: Tensor, steps: Tensor, end: Tensor) -> Tensor:
    """Like :func:`_viterbi_loop` in ``log2 N`` tree levels; returns ``[B, N' + 1]``, ``N' >= N``."""
    batch, _, c, _ = steps.shape
    steps = _pad_pow2(steps, _identity(c, first))
    size = steps.shape[1]
    product, pointers = _tree_reduce(steps, "max")
    # shape: (batch, tags * tags): best over the whole chain from y_0 = i to y_last = j
    flat = (first[:, :, None] + product + end).flatten(1).argmax(1)
    path = first.new_zeros(batch, size + 1, dtype=torch.long)
    path[:, 0], path[:, size] = flat // c, flat % c
    stride = size
    for middle in reversed(pointers):
        # each node of this level spans `stride` steps; its middle tag splits it in two.
        left, right = path[:, 0:size:stride], path[:, stride::stride]
        # shape: (batch, nodes)
        mid = middle.flatten(2).gather(2, (left * c + right)[:, :, None]).squeeze(2)
        path[:, stride // 2 :: stride] = mid
        stride //= 2
    return path


# --------------------------------------------------------------------------------------------
# constraints


def constraint_masks(constraints: Constraints | None, num_tags: int) -> tuple[Tensor, Tensor, Tensor]:
    """``Constraints`` as bool tensors ``(transitions [C, C], start [C], end [C])``, True where
    allowed (all True for ``None``). Raises ValueError on a size mismatch, or when no sequence at
    all would be allowed (no allowed start or no allowed end tag)."""
    if constraints is None:
        ones = torch.ones(num_tags, dtype=torch.bool)
        return torch.ones(num_tags, num_tags, dtype=torch.bool), ones, ones.clone()
    trans = torch.as_tensor(constraints.transitions, dtype=torch.bool)
    start = torch.as_tensor(constraints.start, dtype=torch.bool)
    end = torch.as_tensor(constraints.end, dtype=torch.bool)
    if trans.shape != (num_tags, num_tags) or start.shape != (num_tags,) or end.shape != (num_tags,):
        raise ValueError(
            f"constraints are for {len(constraints.start)} tags (transitions {tuple(trans.shape)}), "
            f"expected {num_tags}"
        )
    if not bool(start.any()) or not bool(end.any()):
        raise ValueError("constraints allow no tag to start or no tag to end a sequence")
    return trans, start, end
