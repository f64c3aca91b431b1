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

Two strategies over time, with the same results: a loop (``T`` small steps, time-major layout
with the batch innermost) and a parallel scan (a balanced tree of ``[C, C]`` semiring matrix
products, ``log2 T`` big steps; max-plus with argmax pointers for Viterbi, then a top-down pass
that reads the path off the tree). Padded steps become identity matrices, so rows of different
lengths share one scan. ``method="auto"`` picks the faster one for the shapes.
"""

from __future__ import annotations

import torch
from torch import Tensor

from corpora.schemes import Constraints

__all__ = ["constraint_masks", "log_partition", "marginals", "sequence_score", "viterbi_decode"]

METHODS = ("auto", "loop", "scan")


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


def _choose(method: str, emissions: Tensor, decoding: bool) -> str:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
    if method != "auto":
        return method
    # The scan does C times the loop's arithmetic (B * T * C^3) in log2(T) big steps instead of
    # T small ones. Measured on a 2-core CPU it wins only where B * C^3 is tiny (a few long
    # sentences, few tags), more easily for log Z, whose loop steps cost more under autograd.
    batch, seq, c = emissions.shape
    return "scan" if seq >= 16 and batch * c**3 <= (256 if decoding else 1024) else "loop"


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
        # shape: (batch, tags)
        first = start + emissions[:, 0]
        steps = _steps_time_major(emissions, mask, transitions, identity=True)
        floor = torch.finfo(dtype).min
        alphas = [first.T.contiguous()]
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
    """The best tag sequence per row, ``[B, T]`` long with ``-1`` at padding positions."""
    _check(emissions, mask, transitions, start, end)
    dtype = _dtype(emissions)
    with torch.no_grad():
        emissions, transitions = emissions.detach().to(dtype), transitions.detach().to(dtype)
        start, end = start.detach().to(dtype), end.detach().to(dtype)
        # shape: (batch, tags)
        first = start + emissions[:, 0]
        if emissions.shape[1] == 1:
            best = (first + end).argmax(1, keepdim=True)
        elif _choose(method, emissions, decoding=True) == "scan":
            best = _viterbi_scan(first, _pairwise(emissions, mask, transitions), end)
        else:
            steps = _steps_time_major(emissions, mask, transitions, identity=False)
            best = _viterbi_loop(first, steps, end, mask.sum(1))
        return torch.where(mask, best[:, : mask.shape[1]], -1)


def _viterbi_loop(first: Tensor, steps: Tensor, end: Tensor, lengths: Tensor) -> Tensor:
    """first ``[B, C]``, steps ``[N, C, C, B]``, end ``[C]``, lengths ``[B]`` -> path ``[B, >= N + 1]``.

    The time loop computes only the best scores (two cheap ops a step); the back-pointers of all
    steps come afterwards from a few batched ops, and the backtrace takes ``~2 sqrt(N)`` steps.
    ``steps`` is overwritten.
    """
    n, c, _, batch = steps.shape
    # shape: (N + 1, tags, batch)
    scores = steps.new_empty(n + 1, c, batch)
    scores[0] = first.T
    # every step's candidate scores are kept (written in place of the steps), for the pointers
    # views made up front: indexing inside the loop would cost as much as the arithmetic
    previous, following = scores[:-1, :, None, :].unbind(0), scores[1:].unbind(0)
    for step, prev, nxt in zip(steps.unbind(0), previous, following, strict=True):
        # shape: (tags_from, tags_to, batch) -> (tags_to, batch)
        torch.amax(step.add_(prev), 0, out=nxt)
    # back-pointer: the first previous tag whose candidate reaches the max. A comparison into a
    # float tensor is vectorised (into bool it is not, and 6x slower); shape: (N, tags_to, batch)
    hit = torch.eq(steps, scores[1:, None], out=steps)
    rank = torch.arange(c, 0, -1, dtype=steps.dtype, device=steps.device)[None, :, None, None]
    pointers = (c - hit.mul_(rank).amax(1)).long().clamp_(max=c - 1)
    # each row ends at position lengths - 1; from there on the pointers are identities
    last_pos = (lengths - 1)[None, None, :]
    final = scores.gather(0, last_pos.expand(1, c, batch)).squeeze(0)
    last = (final + end[:, None]).argmax(0)
    tags = torch.arange(c, device=steps.device)[None, :, None]
    positions = torch.arange(n, device=steps.device)[:, None, None]
    pointers = torch.where(positions >= last_pos, tags, pointers)
    return _backtrace(pointers, last)


def _backtrace(pointers: Tensor, last: Tensor) -> Tensor:
    """Follow back-pointers ``[N, C, B]`` (``pointers[q, j]``: tag at ``q`` given ``j`` at ``q+1``)
    from the last tag ``[B]``; returns ``[B, >= N + 1]``.

    In chunks of ``L ~ sqrt(N)`` steps: inside all chunks at once, the tag at each position for
    each possible tag at the chunk's end (``L`` gathers); then chunk by chunk from the right, the
    tag at each chunk boundary (``N / L`` gathers).
    """
    n, c, batch = pointers.shape
    length = max(1, round(n**0.5))
    chunks = -(-n // length)
    tags = torch.arange(c, device=pointers.device)
    if chunks * length > n:
        pad = tags[None, :, None].expand(chunks * length - n, c, batch)
        pointers = torch.cat([pointers, pad])
    # shape: (chunks, length, tags, batch)
    pointers = pointers.view(chunks, length, c, batch)
    follow = tags[None, :, None].expand(chunks, c, batch)
    within = []
    for step in reversed(pointers.unbind(1)):
        follow = step.gather(1, follow)
        within.append(follow)
    within.reverse()
    # shape: (chunks, length, tags, batch): tag at position k*L + l given the tag at (k+1)*L
    within = torch.stack(within, 1)
    ends = [last[None, :]]
    for chunk_start in reversed(within[1:, 0].unbind(0)):
        ends.append(chunk_start.gather(0, ends[-1]))
    ends.reverse()
    # shape: (chunks, batch): the tag at the end of each chunk
    ends = torch.cat(ends)
    path = within.gather(2, ends[:, None, None, :].expand(chunks, length, 1, batch)).view(-1, batch)
    return torch.cat([path, last[None, :]]).T


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
